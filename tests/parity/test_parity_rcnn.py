"""Faster / Mask R-CNN R50-FPN (Ren et al. 2015; He et al. 2017; Lin et al. 2017) against torchvision's, weights
converted by `convert_torchvision`: the FPN maps, the RPN's proposals (as sets), the RoI heads' detections and
masks on torchvision's own proposals, and the training losses with sampling quotas large enough to take every
candidate (so neither side samples at random).

Every weight is redrawn from N(0, 1/fan_in), biases and BatchNorm scales randomised, and each frozen BatchNorm's
statistics set from its input on the test images (jittered), so activations stay O(1) through the random network
and scores spread instead of saturating (ties would make the comparisons ambiguous, not wrong). Each comparison
also asserts that there is something to compare.
"""
import subprocess
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.misc import FrozenBatchNorm2d

import inception_zoo.models.detection.rcnn  # noqa: F401  (registers the detectors)
from inception_zoo import ops
from inception_zoo.convert import convert_torchvision

S, K = 256, 5  # square images whose side is a multiple of 32, so torchvision's transform is the identity; classes
# Fewer RPN candidates than torchvision's defaults (same code paths, faster), and sampling quotas above the number
# of candidates: every anchor and every proposal is sampled, on both sides.
OPTIONS = dict(rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=1000, rpn_pre_nms_top_n_train=200,
               rpn_post_nms_top_n_train=200, rpn_batch_size_per_image=100_000, box_batch_size_per_image=100_000)
TORCH_ONLY = ("rpn_batch_size_per_image", "box_batch_size_per_image")  # torchvision's samplers are set directly
# Smaller box regressors (deltas ~0.4: boxes of sensible shapes, not slivers whose IoU a rounding flips) and
# objectness (logits ~2: sigmoid scores short of 1.0, where they would tie).
GAIN = {"rpn.head.bbox_pred.weight": 0.1, "roi_heads.box_predictor.bbox_pred.weight": 0.1,
        "rpn.head.cls_logits.weight": 0.5}


def randomized(name, images):
  """torchvision's `name` as `maskrcnn_resnet50_fpn(weights=COCO_V1)` builds it (FrozenBatchNorm2d in the body,
  which it only uses with weights, at eps 0), with the test's random weights."""
  torch.manual_seed(0)
  backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d)
  detector = torchvision.models.detection.MaskRCNN if name.startswith("mask") else FasterRCNN
  model = detector(backbone, num_classes=K, box_score_thresh=0.0, min_size=S, max_size=S, image_mean=[0.0] * 3,
                   image_std=[1.0] * 3, **{k: v for k, v in OPTIONS.items() if k not in TORCH_ONLY})
  model.eval()
  with torch.no_grad():
    for key, t in model.state_dict().items():
      if t.ndim > 1:  # a ConvTranspose2d weight is (in, out, kh, kw): each output reads `in` inputs
        t.normal_(0.0, (t.shape[0] if "conv5_mask" in key else t[0].numel()) ** -0.5 * GAIN.get(key, 1.0))
      elif key.endswith("weight"):  # FrozenBatchNorm2d scales
        t.normal_(1.0, 0.2)
      elif key.endswith("bias"):
        t.normal_(0.0, 0.2)

    def calibrate(module, args):
      mean, var = args[0].mean((0, 2, 3)), args[0].var((0, 2, 3))
      module.running_mean.copy_(mean + 0.2 * var.sqrt() * torch.randn_like(mean))
      module.running_var.copy_(var * torch.empty_like(var).uniform_(0.5, 2.0))

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    model.backbone(images)
    for hook in hooks:
      hook.remove()
  overwrite_eps(model, 0.0)
  return model


def train_targets(proposals):
  """Padded targets for two images (the first has a padding instance): boxes near three of torchvision's training
  proposals of each image (so that other proposals match them too), their classes, full-image masks (ellipses
  in the boxes) and the masks' box crops."""
  rng = np.random.default_rng(1)
  boxes = np.zeros((2, 3, 4), np.float32)
  for b, p in enumerate(proposals):
    p = p.numpy()
    sizable = p[(p[:, 2] - p[:, 0] > 24) & (p[:, 3] - p[:, 1] > 24)]
    boxes[b] = np.clip(sizable[[0, len(sizable) // 2, -1]] + rng.uniform(-3, 3, (3, 4)), 0, S)
  valid = np.array([[True, True, False], [True, True, True]])
  boxes[~valid] = 0
  labels = np.where(valid, rng.integers(1, K, (2, 3)), 0)
  yy, xx = np.mgrid[:S, :S] + 0.5
  full = np.zeros((2, 3, S, S), np.uint8)
  for b, m in zip(*np.nonzero(valid)):
    x1, y1, x2, y2 = boxes[b, m]
    cx, cy = (x1 + x2) / 2 + rng.uniform(-3, 3), (y1 + y2) / 2 + rng.uniform(-3, 3)
    full[b, m] = ((xx - cx) / ((x2 - x1) * 0.45)) ** 2 + ((yy - cy) / ((y2 - y1) * 0.45)) ** 2 <= 1
  crops = np.stack([ops.crop_masks(full[b], boxes[b]) for b in range(2)])
  return dict(boxes=boxes, labels=labels, instance_valid=valid, masks=crops), full


def pad(boxes_list):
  """torchvision's per-image proposal lists -> (B, P, 4) and validity."""
  p = max(len(b) for b in boxes_list)
  out, valid = np.zeros((len(boxes_list), p, 4), np.float32), np.zeros((len(boxes_list), p), bool)
  for i, b in enumerate(boxes_list):
    out[i, :len(b)], valid[i, :len(b)] = b.detach().numpy(), True
  return out, valid


def matched_fraction(reference, ours):
  """Fraction of the (N, 4) reference boxes with a box of `ours` at IoU > 0.999."""
  return float(np.mean(np.asarray(ops.box_iou(jnp.asarray(reference), jnp.asarray(ours))).max(1) > 0.999))


@pytest.fixture(scope="module", params=["maskrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn"])
def pair(request):
  torch.set_num_threads(2)
  x = np.random.default_rng(0).normal(size=(2, S, S, 3)).astype(np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  reference = randomized(request.param, xt)
  state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
  model, variables = convert_torchvision(request.param, state_dict, box_score_thresh=0.0, **OPTIONS)
  return SimpleNamespace(name=request.param, reference=reference, model=model, variables=variables, x=x, xt=xt,
                         images=ImageList(xt, [(S, S)] * 2))


def test_fpn_and_rpn_match_torchvision(pair):
  tv = pair.reference.eval()  # the training test leaves it in training mode
  with torch.no_grad():
    transformed, _ = tv.transform(list(pair.xt))
    assert transformed.image_sizes == [(S, S)] * 2 and torch.equal(transformed.tensors, pair.xt)
    features = tv.backbone(pair.xt)
    proposals, _ = tv.rpn(pair.images, features)

  def ours(m, x):
    pyramid = m.backbone(x)
    return pyramid, m.rpn(pyramid, jnp.full((2, 2), S), (S, S), train=False)

  pyramid, (boxes, valid, _) = jax.jit(lambda v, x: pair.model.apply(v, x, method=ours))(pair.variables, pair.x)
  for ref, out in zip(features.values(), pyramid):
    ref = ref.numpy().transpose(0, 2, 3, 1)
    scale = np.abs(ref).max()
    assert 0.5 < scale < 100, scale  # O(1) activations: the calibrated statistics work
    assert np.abs(np.asarray(out) - ref).max() <= 1e-4 * scale
  for i, ref in enumerate(proposals):
    ref = ref.numpy()
    assert 200 <= len(ref) < 1000  # NMS removed some: the count is the RPN's, not a cap
    # Float rounding of the decoded boxes can flip an IoU that sits at the NMS threshold, and with it a box or two.
    assert abs(int(valid[i].sum()) - len(ref)) <= 0.01 * len(ref)
    assert matched_fraction(ref, np.asarray(boxes[i])[np.asarray(valid[i])]) >= 0.98


def test_roi_heads_match_torchvision_on_its_proposals(pair):
  tv = pair.reference.eval()  # the training test leaves it in training mode
  with torch.no_grad():
    features = tv.backbone(pair.xt)
    proposals, _ = tv.rpn(pair.images, features)
    detections, _ = tv.roi_heads(features, proposals, pair.images.image_sizes)
  boxes, valid = pad(proposals)
  out = jax.jit(lambda v, x, p, pv: pair.model.apply(v, x, proposals=p, proposal_valid=pv))(
      pair.variables, pair.x, boxes, valid)
  for i, ref in enumerate(detections):
    keep = np.asarray(out["valid"][i])
    assert len(ref["boxes"]) >= 50 and int(keep.sum()) == len(ref["boxes"])
    np.testing.assert_array_equal(np.asarray(out["labels"][i])[keep], ref["labels"].numpy())
    assert np.abs(np.asarray(out["boxes"][i])[keep] - ref["boxes"].numpy()).max() <= 1e-4 * S
    scores = ref["scores"].numpy()
    assert len(np.unique(scores)) == len(scores) and scores.max() < 0.99  # no ties, not saturated
    assert np.abs(np.asarray(out["scores"][i])[keep] - scores).max() <= 1e-4 * scores.max()
    if "masks" in ref:
      probs = ref["masks"][:, 0]
      assert probs.std() > 0.05
      assert np.abs(np.asarray(out["mask_probs"][i])[keep] - probs.numpy()).max() <= 1e-4
      pasted = tv_roi_heads.paste_masks_in_image(ref["masks"], ref["boxes"], (S, S))[:, 0].numpy()
      assert np.abs(np.asarray(out["masks"][i])[keep] - pasted).max() <= 1e-4


def test_training_losses_match_torchvision(pair, monkeypatch):
  tv = pair.reference.train()
  tv.rpn.fg_bg_sampler.batch_size_per_image = OPTIONS["rpn_batch_size_per_image"]
  tv.roi_heads.fg_bg_sampler.batch_size_per_image = OPTIONS["box_batch_size_per_image"]
  with torch.no_grad():
    features = tv.backbone(pair.xt)
    placeholder = [{"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]])}] * 2  # the proposals do not depend on targets
    targets, full_masks = train_targets(tv.rpn(pair.images, features, placeholder)[0])
  torch_targets = [{k: torch.from_numpy(targets[k][b][v]) for k in ("boxes", "labels", "masks")}
                   for b, v in enumerate(targets["instance_valid"])]

  # These targets are box crops (ops.mask_targets) where torchvision rasterises full-image masks: torchvision gets
  # the same targets from the same crops here, and its own rasterisation is compared loosely below.
  def project_crops(gt_masks, boxes, matched_idxs, size):
    b = next(i for i, t in enumerate(torch_targets) if t["masks"] is gt_masks)
    out = ops.mask_targets(jnp.asarray(gt_masks.numpy()), jnp.asarray(torch_targets[b]["boxes"].numpy()),
                           jnp.asarray(matched_idxs.numpy()), jnp.asarray(boxes.detach().numpy()), size)
    return torch.from_numpy(np.array(out))

  with torch.no_grad():
    proposals, rpn_losses = tv.rpn(pair.images, features, torch_targets)
    _, _, labels, _ = tv.roi_heads.select_training_samples(proposals, torch_targets)
    with monkeypatch.context() as patch:
      patch.setattr(tv_roi_heads, "project_masks_on_boxes", project_crops)
      _, roi_losses = tv.roi_heads(features, proposals, pair.images.image_sizes, torch_targets)
    if pair.name.startswith("mask"):
      full = [{**t, "masks": torch.from_numpy(full_masks[b][targets["instance_valid"][b]])}
              for b, t in enumerate(torch_targets)]
      full_mask_loss = float(tv.roi_heads(features, proposals, pair.images.image_sizes, full)[1]["loss_mask"])
  expected = {k: float(v) for k, v in {**rpn_losses, **roi_losses}.items()}
  assert len(expected) == (5 if pair.name.startswith("mask") else 4)
  # Proposals besides the gts themselves are positive, and every anchor and proposal is sampled.
  assert all(int((lb > 0).sum()) > len(t["boxes"]) for lb, t in zip(labels, torch_targets))
  assert [len(lb) for lb in labels] == [len(p) + len(t["boxes"]) for p, t in zip(proposals, torch_targets)]

  boxes, valid = pad(proposals)
  targets = {k: jnp.asarray(v) for k, v in targets.items()}
  rngs = {"sampling": jax.random.key(0)}
  losses = jax.jit(lambda v, x, p, pv, t: pair.model.apply(v, x, train=True, targets=t, proposals=p,
                                                           proposal_valid=pv, rngs=rngs))(
      pair.variables, pair.x, boxes, valid, targets)
  # The RPN's losses, from its own proposals (which only feed the RoI heads).
  losses.update(jax.jit(lambda v, x, t: pair.model.apply(
      v, x, method=lambda m, x: m.rpn(m.backbone(x), jnp.full((2, 2), S), (S, S), train=True, targets=t)[2],
      rngs=rngs))(pair.variables, pair.x, targets))
  assert set(losses) == set(expected) and expected["loss_rpn_box_reg"] > 0  # some anchors are positive
  if pair.name.startswith("mask"):
    # From crops at 112x112 rather than full masks, the targets differ by a fraction of a pixel at the edges.
    assert abs(float(losses["loss_mask"]) - full_mask_loss) <= 1e-2 * full_mask_loss
  for key in sorted(expected):
    assert abs(float(losses[key]) - expected[key]) <= 1e-4 * abs(expected[key]), (key, losses, expected)


def test_convert_cli_takes_a_torchvision_detector(tmp_path):
  torch.manual_seed(0)
  reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                   num_classes=K)
  path = tmp_path / "fasterrcnn.safetensors"
  safetensors.numpy.save_file({k: v.numpy() for k, v in reference.state_dict().items()}, str(path))
  proc = subprocess.run([sys.executable, "-m", "inception_zoo.convert", "--torchvision", "fasterrcnn_resnet50_fpn",
                         "--checkpoint", str(path), "--out", str(tmp_path / "weights"), "--bn-eps", "1e-5"],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert f"{K} classes" in proc.stdout
