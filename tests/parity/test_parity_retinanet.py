"""RetinaNet (Lin et al. 2017) against torchvision's `retinanet_resnet50_fpn` (v1): the converted weights give the
same anchors and head outputs, the same detections after top-k, decoding and NMS, and the same training losses
on the same targets. torchvision's weights are redrawn (convolutions N(0, 1/fan_in), norms and biases
randomised, seeded) so that scores spread well above the score threshold and every parameter matters.

torchvision's transform is made the identity (images of exactly min_size = max_size, mean 0, std 1, a size
divisible by 32), which the test checks, so both models see the same pixels and return boxes in the same frame.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn as torchvision_retinanet

from inception_zoo import create_model
from inception_zoo import convert
from inception_zoo.models.detection import retinanet  # noqa: F401  (registers retinanet_resnet50_fpn)

SIZE, CLASSES = 256, 5


def torchvision_to_flax(state_dict, abstract):
  """The library's strict conversion (every torchvision tensor used, every Flax leaf filled), at the eps of a
  model built without weights (BatchNorm2d, 1e-5)."""
  return convert.torchvision_detection_to_flax(state_dict, abstract, convert.retinanet_key, bn_eps=1e-5)


def randomized_torchvision(seed: int = 0):
  torch.manual_seed(seed)
  model = torchvision_retinanet(weights=None, weights_backbone=None, num_classes=CLASSES, score_thresh=0.0,
                                min_size=SIZE, max_size=SIZE, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0])
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0.0, 0.2)
        m.running_var.uniform_(0.5, 2.0)
    for key, p in model.named_parameters():
      if p.ndim == 4:
        p.normal_(0.0, 1 / math.sqrt(p[0].numel()))
        if key.endswith("cls_logits.weight"):  # zero-mean filters on the ReLU tower: no class dominates
          p.sub_(p.mean(dim=(1, 2, 3), keepdim=True))
      elif key.endswith("weight"):  # BatchNorm scales
        p.normal_(1.0, 0.2)
      else:
        p.normal_(0.0, 0.2)
  return model


def targets(rng):
  """Two images with 3 and 1 boxes (padded to 4): sizes 40-160 px, plus a 12 px box that only the low-quality
  rule of the Matcher matches (its best anchor IoU is below 0.4)."""
  boxes = np.zeros((2, 4, 4), np.float32)
  labels = np.zeros((2, 4), np.int32)
  valid = np.zeros((2, 4), bool)
  for i, n in enumerate((3, 1)):
    for j in range(n):
      w, h = rng.uniform(40, 160, 2)
      x, y = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
      boxes[i, j] = (x, y, x + w, y + h)
    labels[i, :n] = rng.integers(1, CLASSES, n)
    valid[i, :n] = True
  boxes[0, 3], labels[0, 3], valid[0, 3] = (100.0, 100.0, 112.0, 112.0), 2, True
  return boxes, labels, valid


@pytest.fixture(scope="module")
def results():
  reference = randomized_torchvision()
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
  boxes, labels, valid = targets(rng)
  x = list(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  tv_targets = [{"boxes": torch.from_numpy(b[v]), "labels": torch.from_numpy(lab[v]).long()}
                for b, lab, v in zip(boxes, labels, valid)]
  with torch.no_grad():
    reference.eval()
    image_list, _ = reference.transform(x)
    features = list(reference.backbone(image_list.tensors).values())
    tv = {"transformed": image_list, "head": reference.head(features),
          "anchors": reference.anchor_generator(image_list, features)[0], "detections": reference(x)}
    # Training losses with frozen BatchNorm, as torchvision trains from pretrained weights (FrozenBatchNorm2d).
    reference.train()
    for m in reference.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.eval()
    tv["losses"] = reference(x, tv_targets)

  model = create_model("retinanet_resnet50_fpn", num_classes=CLASSES, score_thresh=0.0)
  abstract = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(images.shape, jnp.float32))
  variables = torchvision_to_flax({k: v.numpy() for k, v in reference.state_dict().items()}, abstract)

  @jax.jit
  def run(variables, images, boxes, labels, valid):
    head = model.apply(variables, images, method=model.head_outputs)
    losses = model.apply(variables, images, dict(boxes=boxes, labels=labels, instance_valid=valid), train=True)
    return head, model.apply(variables, images), losses

  head, detections, losses = run(variables, images, boxes, labels, valid)
  return {"tv": tv, "images": images, "head": head, "detections": detections, "losses": losses}


def test_torchvision_transform_is_the_identity(results):
  transformed = results["tv"]["transformed"]
  assert transformed.image_sizes == [(SIZE, SIZE)] * 2
  np.testing.assert_array_equal(transformed.tensors.numpy().transpose(0, 2, 3, 1), results["images"])


def test_anchors_and_head_outputs_match(results):
  tv, head = results["tv"], results["head"]
  np.testing.assert_array_equal(np.concatenate(head["anchors"]), tv["anchors"].numpy())
  for key in ("cls_logits", "bbox_regression"):
    expected = tv["head"][key].numpy()
    scale = np.abs(expected).max()
    error = np.abs(np.asarray(head[key]) - expected).max()
    assert error <= 1e-4 * scale, (key, error, scale)


def test_detections_match(results):
  for i, expected in enumerate(results["tv"]["detections"]):
    valid = np.asarray(results["detections"]["valid"][i])
    got = {k: np.asarray(results["detections"][k][i])[valid] for k in ("boxes", "scores", "labels")}
    expected = {k: v.numpy() for k, v in expected.items()}
    assert len(expected["scores"]) >= 50 and len(got["scores"]) == len(expected["scores"])
    # Each detection pairs with the other list's one of its class, box and score (to the tolerances): not by
    # rank, as scores within rounding of each other (measured: two of 300, of two classes) swap places.
    for label, box, score in zip(expected["labels"], expected["boxes"], expected["scores"]):
      same = ((got["labels"] == label) & (np.abs(got["scores"] - score) <= 1e-4)
              & (np.abs(got["boxes"] - box).max(-1) <= 1e-4 * SIZE))
      assert same.any(), (i, label, box, score)
      got = {k: np.delete(v, np.argmax(same), axis=0) for k, v in got.items()}  # each pairs once


def test_training_losses_match(results):
  for key, expected in results["tv"]["losses"].items():
    np.testing.assert_allclose(float(results["losses"][key]), float(expected), rtol=1e-4)
