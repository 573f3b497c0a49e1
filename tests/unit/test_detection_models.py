"""Faster / Mask R-CNN at a tiny size: padded outputs and their validity, training losses that reach every
parameter, one compilation for batches with different numbers of instances, one-line input errors, and the
torchvision converter's rule and strictness (torch-free; numerical parity is tests/parity/test_parity_rcnn.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_zoo import UserError, create_model, list_models, ops
from inception_zoo.convert import torchvision_detection_to_flax, torchvision_key
from inception_zoo.models.detection.rcnn import check_targets
from inception_zoo.pytree import path_str
from inception_zoo.registry import model_options

NAMES = ["fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"]
K, H, W = 5, 64, 96


def tiny(name, **kwargs):
  return create_model(name, num_classes=K, **type(create_model(name)).tiny_options, **kwargs)


def targets(valid):
  """Padded targets for two images with instances `valid` (2, 3); mask crops of random blobs."""
  boxes = np.array([[[4, 6, 40, 50], [30, 10, 90, 40], [50, 30, 80, 60]],
                    [[10, 12, 60, 62], [0, 0, 20, 30], [64, 8, 95, 33]]], np.float32)
  valid = np.asarray(valid)
  masks = (np.random.default_rng(0).uniform(size=(2, 3, 112, 112)) > 0.5).astype(np.float32)
  return {"boxes": np.where(valid[..., None], boxes, 0), "labels": np.where(valid, [[1, 4, 2], [3, 1, 4]], 0),
          "instance_valid": valid, "masks": masks}


SIZES = np.array([[H, W], [48, 80]])  # the second image is smaller than the canvas


@pytest.fixture(scope="module", params=NAMES)
def detector(request):
  """(model, images, variables, the forward pass's output), from one compilation."""
  model = tiny(request.param)
  x = jax.random.normal(jax.random.key(0), (2, H, W, 3))
  out, variables = jax.jit(lambda k, x, s: model.init_with_output(k, x, image_sizes=s))(jax.random.key(1), x, SIZES)
  return model, x, variables, out


def test_registered_as_detectors_with_torchvision_options():
  assert set(NAMES) <= set(list_models(task="detection"))
  assert "maskrcnn_resnet50_fpn" in list_models(task="segmentation")
  options = model_options("maskrcnn_resnet50_fpn")
  assert {"num_classes", "frozen_bn", "rpn_nms_thresh", "box_score_thresh", "box_detections_per_img",
          "mask_layers", "paste_masks"} <= set(options)
  assert "mask_layers" not in model_options("fasterrcnn_resnet50_fpn")


@pytest.mark.parametrize("name, trainable", [("fasterrcnn_resnet50_fpn", 41_755_286),
                                             ("maskrcnn_resnet50_fpn", 44_401_393)])
def test_parameter_counts_match_torchvision(name, trainable):
  """torchvision's counts with 91 classes; its FrozenBatchNorm2d keeps the body's 53,120 BatchNorm scales and
  shifts as buffers, which are parameters here (frozen by the optimizer, not the model)."""
  shapes = jax.eval_shape(create_model(name).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert count(shapes["params"]) == trainable + 53_120
  assert count(shapes["batch_stats"]) == 53_120


def test_forward_returns_padded_valid_detections(detector):
  model, _, _, out = detector
  d, p = model.box_detections_per_img, model.rpn_post_nms_top_n_test
  shapes = {"boxes": (2, d, 4), "scores": (2, d), "labels": (2, d), "valid": (2, d), "proposals": (2, p, 4),
            "proposal_valid": (2, p)}
  if model.has_masks:
    shapes.update(masks=(2, d, H, W), mask_probs=(2, d, 28, 28))
  assert {k: v.shape for k, v in out.items()} == shapes
  assert out["labels"].dtype == jnp.int32 and out["valid"].dtype == jnp.bool_
  valid = np.asarray(out["valid"])
  assert valid.sum(1).min() > 0 and np.asarray(out["proposal_valid"]).sum(1).min() > 0
  labels, scores, boxes = (np.asarray(out[k]) for k in ("labels", "scores", "boxes"))
  assert np.all((labels[valid] >= 1) & (labels[valid] < K)) and np.all(labels[~valid] == 0)
  assert np.all(scores[~valid] == 0) and np.all(boxes[~valid] == 0)
  for i in range(2):
    s = scores[i][valid[i]]
    assert np.all(np.diff(s) <= 0)  # best first
    h, w = SIZES[i]
    for b in (boxes[i][valid[i]], np.asarray(out["proposals"][i])):  # clipped to the image, not the canvas
      assert np.all(b[:, 2] <= w) and np.all(b[:, 3] <= h)
  if model.has_masks:
    probs = np.asarray(out["mask_probs"])
    assert np.all((probs >= 0) & (probs <= 1)) and np.all(probs[~valid] == 0)
    paste = jax.jit(lambda m, b: ops.paste_masks(m.reshape(-1, 28, 28), b.reshape(-1, 4), H, W))
    pasted = paste(out["mask_probs"], out["boxes"])
    np.testing.assert_allclose(out["masks"], pasted.reshape(2, -1, H, W), atol=1e-6)


def test_training_compiles_once_and_every_parameter_learns(detector):
  model, x, variables, _ = detector
  traces = []

  @jax.jit
  def step(params, t):
    traces.append(1)  # runs only while tracing

    def loss(params):
      losses = model.apply({**variables, "params": params}, x, targets=t, train=True,
                           rngs={"sampling": jax.random.key(2)})
      return sum(losses.values()), losses
    return jax.grad(loss, has_aux=True)(params)

  expected = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
  expected |= {"loss_mask"} if model.has_masks else set()
  for valid in ([[True, True, False], [True, False, False]], [[True, True, True], [True, True, True]]):
    t = targets(valid)
    check_targets(t, K, masks=model.has_masks)
    grads, losses = step(variables["params"], t)
    assert set(losses) == expected
    assert all(np.isfinite(float(v)) and float(v) > 0 for v in losses.values()), losses
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
      assert np.all(np.isfinite(g)), path_str(path)
      assert np.any(g != 0), f"no gradient reaches {path_str(path)}"
  assert len(traces) == 1


@pytest.mark.parametrize("shape, message", [
    ((1, 16, 64, 3), "needs images of at least 32x32 pixels"),
    ((1, 64, 80, 3), r"multiples of 32 pixels .*got 64x80"),
    ((64, 64, 3), r"expects images of shape \(batch, height, width, channels\)"),
    ((1, 64, 64, 1), "3-channel images"),
])
def test_bad_image_shapes_are_one_line_errors(shape, message):
  model = tiny("maskrcnn_resnet50_fpn")
  with pytest.raises(UserError, match=message) as error:
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
  assert "\n" not in str(error.value)


def test_bad_targets_are_one_line_errors():
  good = targets([[True, True, False], [True, False, False]])
  check_targets(good, K, masks=True)
  padding_class = {**good, "labels": np.where(good["instance_valid"], good["labels"], 99)}
  check_targets(padding_class, K)  # padding instances are never read
  for bad, message in [
      ({**good, "labels": np.where(good["instance_valid"], K, 0)}, f"class id {K} .* outside 1..{K - 1}"),
      ({**good, "labels": np.zeros((2, 3), int)}, "class id 0 .* 0 is the background"),
      ({**good, "boxes": np.where(good["instance_valid"][..., None], [5, 5, 5, 9], 0)}, "has no area"),
      ({k: v for k, v in good.items() if k != "masks"}, "missing masks"),
      ({**good, "labels": good["labels"][:, :2]}, "must be boxes"),
  ]:
    with pytest.raises(UserError, match=message):
      check_targets(bad, K, masks=True)
  model = tiny("fasterrcnn_resnet50_fpn")
  x = jnp.zeros((2, H, W, 3))
  with pytest.raises(UserError, match="needs targets in training"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=True))
  with pytest.raises(UserError, match="must be boxes"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=True, targets={**good, "boxes": good["boxes"][:1]}))


def test_converter_rule_and_strictness():
  """Every leaf's torchvision key by rule, checked on a few known names and by a round trip: a state dict laid
  out as torchvision's (OIHW, (out, in), ConvTranspose2d (in, out, kh, kw)) converts back to the variables."""
  assert torchvision_key("params", "backbone/fpn/inner_blocks_2/kernel") == "backbone.fpn.inner_blocks.2.0.weight"
  assert torchvision_key("params", "rpn/head/conv/layers_0/layers_0/bias") == "rpn.head.conv.0.0.bias"
  assert (torchvision_key("batch_stats", "backbone/body/layer2/layers_0/downsample/layers_1/var")
          == "backbone.body.layer2.0.downsample.1.running_var")
  assert torchvision_key("params", "roi_heads/mask_predictor/conv5_mask/kernel") == \
      "roi_heads.mask_predictor.conv5_mask.weight"
  model = tiny("maskrcnn_resnet50_fpn")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  state_dict = {}
  for collection, tree in variables.items():
    for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
      # HWIO -> OIHW (a ConvTranspose kernel (kh, kw, out, in) -> (in, out, kh, kw) by the same transpose)
      layout = {4: (3, 2, 0, 1), 2: (1, 0)}.get(value.ndim)
      state_dict[torchvision_key(collection, path_str(path))] = value.transpose(layout) if layout else value
  assert "roi_heads.mask_predictor.conv5_mask.weight" in state_dict
  back = torchvision_detection_to_flax(state_dict, dict(shapes))
  jax.tree.map(np.testing.assert_array_equal, back, variables)
  with pytest.raises(UserError, match="have no Flax counterpart, e.g. 'roi_heads.extra.weight'"):
    torchvision_detection_to_flax({**state_dict, "roi_heads.extra.weight": np.zeros(3)}, dict(shapes))
  missing = {k: v for k, v in state_dict.items() if k != "rpn.head.cls_logits.bias"}
  with pytest.raises(UserError, match="has no 'rpn.head.cls_logits.bias'"):
    torchvision_detection_to_flax(missing, dict(shapes))
