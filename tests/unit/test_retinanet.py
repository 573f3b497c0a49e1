"""RetinaNet at a tiny size (quarter-width ResNet body with one block per stage, 32-channel FPN): padded
detections of static shape, finite losses whose gradients reach every head parameter, one compilation for
batches with different numbers of instances. Parity with torchvision is tests/parity/test_parity_retinanet.py."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_zoo import UserError, create_model
from inception_zoo.models.detection.retinanet import RetinaNet

SIZE, CLASSES, DETECTIONS = 64, 5, 20


@pytest.fixture(scope="module")
def tiny():
  model = create_model("retinanet_resnet50_fpn", num_classes=CLASSES, score_thresh=0.0,
                       detections_per_img=DETECTIONS, **RetinaNet.tiny_options)
  images = jax.random.normal(jax.random.key(0), (2, SIZE, SIZE, 3))
  # Initialising through the head alone creates every variable without compiling the postprocessing.
  init = jax.jit(functools.partial(model.init, method=RetinaNet.head_outputs))
  return model, images, init(jax.random.key(1), images)


def batch_targets(counts):
  """Boxes for `counts` instances per image, padded to 3 with zero boxes."""
  boxes = np.zeros((len(counts), 3, 4), np.float32)
  boxes[:, :, :2] = [[4, 6], [20, 10], [30, 30]]
  boxes[:, :, 2:] = boxes[:, :, :2] + [[30, 40], [36, 20], [12, 12]]
  valid = np.arange(3)[None] < np.asarray(counts)[:, None]
  return {"boxes": np.where(valid[..., None], boxes, 0.0), "labels": np.where(valid, [1, 2, 4], 0),
          "instance_valid": valid}


def test_tiny_detections_are_padded_and_inside_the_image(tiny):
  model, images, variables = tiny
  out = jax.jit(model.apply)(variables, images)
  assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
      "boxes": ((2, DETECTIONS, 4), jnp.float32), "scores": ((2, DETECTIONS), jnp.float32),
      "labels": ((2, DETECTIONS), jnp.int32), "valid": ((2, DETECTIONS), jnp.bool_)}
  assert np.all(out["valid"])  # score_thresh 0: every one of the many candidates is a detection
  assert np.all((out["boxes"] >= 0) & (out["boxes"] <= SIZE))
  assert np.all(np.diff(out["scores"], axis=1) <= 0)
  assert np.all((out["labels"] >= 0) & (out["labels"] < CLASSES))


def test_losses_are_finite_compile_once_and_reach_every_head_parameter(tiny):
  model, images, variables = tiny
  traces = []

  @jax.jit
  def grads(params, targets):
    traces.append(1)

    def loss(params):
      losses = model.apply({**variables, "params": params}, images, targets, train=True)
      return losses["classification"] + losses["bbox_regression"], losses
    return jax.grad(loss, has_aux=True)(params)

  # One image with no instance at all: every anchor is background there, and the loss stays finite.
  for counts in ((3, 1), (2, 0)):
    g, losses = grads(variables["params"], batch_targets(counts))
    assert all(np.isfinite(v) and v > 0 for v in losses.values()), losses
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))
    norms = jax.tree_util.tree_leaves_with_path(jax.tree.map(lambda x: float(jnp.abs(x).sum()), g["head"]))
    assert all(n > 0 for _, n in norms), [jax.tree_util.keystr(p) for p, n in norms if n == 0]
  assert len(traces) == 1


def test_training_needs_targets(tiny):
  model, images, variables = tiny
  with pytest.raises(UserError, match="needs targets"):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=True), variables, images)
