"""Segmentation models (DeepLabV3 / V3+, Semantic FPN) and the backbones' output stride, torch-free and mostly
abstract (shapes only): outputs at the input resolution for every registered name, the dilated backbones' map sizes,
torchvision's parameter counts, the reference codes' parameter names, one-line errors for bad options (numerical
parity with the PyTorch codes is tests/parity/test_parity_segmentation.py)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_zoo import UserError, create_model, list_models
from inception_zoo.convert import mmseg_key, torchvision_key
from inception_zoo.layers.resize import interpolation_matrix, resize_bilinear
from inception_zoo.pytree import path_str
from inception_zoo.registry import model_options

NAMES = ["deeplabv3_resnet50", "deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet18", "deeplabv3plus_resnet50",
         "deeplabv3plus_resnet101", "semantic_fpn_resnet50"]
K, H, W = 5, 65, 80


def tiny(name, **kwargs):
  return create_model(name, num_classes=K, **{**type(create_model(name)).tiny_options, **kwargs})


def shapes(model, x):
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  return variables, jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_registered_as_segmentation_models_with_the_options():
  assert set(NAMES) <= set(list_models(task="segmentation"))
  for name in NAMES:
    model = create_model(name)
    assert {"num_classes", "body", "body_options", "aux"} <= set(model_options(name))
    assert model.min_size == 32 and model.head_name in ("classifier", "conv_seg")
  assert {"variant", "output_stride", "multi_grid", "decoder_convs"} <= set(model_options("deeplabv3plus_resnet18"))
  # The CPS / MGD networks by default, VainF's and torchvision's where MGD has no counterpart.
  assert create_model("deeplabv3plus_resnet18").variant == "cps"
  assert create_model("deeplabv3plus_resnet101").body_options == {"stem_type": "deep", "stem_width": 64}
  assert create_model("deeplabv3plus_resnet18").body_options == {"stem_type": "deep", "stem_width": 32}
  assert create_model("deeplabv3plus_resnet101", variant="standard").body_options is None
  assert create_model("deeplabv3plus_mobilenetv2").variant == "standard"
  assert create_model("semantic_fpn_resnet50").body_options == {"stem_type": "deep", "stem_width": 32}


@pytest.mark.parametrize("name", NAMES)
def test_outputs_at_the_input_resolution(name):
  x = jax.ShapeDtypeStruct((2, H, W, 3), jnp.float32)
  _, out = shapes(tiny(name), x)
  assert {k: v.shape for k, v in out.items()} == {"logits": (2, H, W, K)}
  model = tiny(name, aux=True)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  out, updates = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)}),
      variables, x)
  assert {k: v.shape for k, v in out.items()} == {"logits": (2, H, W, K), "aux_logits": (2, H, W, K)}
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])


def test_tiny_cps_forward_is_finite_and_varies_over_the_image():
  model = tiny("deeplabv3plus_resnet18", aux=True)
  x = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))
  # Random variables of the right shapes: compiling `init` (a generator per tensor) takes several times longer.
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda v: rng.uniform(0.5, 1.5, v.shape).astype(np.float32) / np.sqrt(v.shape[-2])
                           if len(v.shape) == 4 else rng.uniform(0.5, 1.5, v.shape).astype(np.float32),
                           jax.eval_shape(model.init, jax.random.key(1), x))
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  for key in ("logits", "aux_logits"):
    logits = np.asarray(out[key])
    assert np.all(np.isfinite(logits)) and np.abs(np.diff(logits, axis=1)).max() > 0, key
  assert variables["params"]["classifier"]["kernel"].shape == (1, 1, 8, K)


@pytest.mark.parametrize("name", ["resnet50", "resnet18", "mobilenetv2_100"])
def test_output_stride_sets_the_c5_size(name):
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  counts = set()
  for output_stride in (32, 16, 8):
    # Real widths: at the tiny ones a dilated stage may keep its width and so lose its projection shortcut.
    small = {"width": 0.25, "depth": 0.25} if name.startswith("mobilenet") else {"layers": (1, 1, 1, 1)}
    model = create_model(name, output_stride=output_stride, **small)
    variables, (_, features) = shapes(model, x)
    sides = [features[f"C{i}"].shape[1] for i in (2, 3, 4, 5)]
    assert sides == [max(64 // s, 64 // output_stride) for s in (4, 8, 16, 32)], (output_stride, sides)
    counts.add(count(variables["params"]))
  assert len(counts) == 1  # dilation changes no parameter, so the same (timm) weights load


def test_multi_grid_follows_the_cps_loop():
  """CPS's `_nostride_dilate` loop: layer4's blocks at 2, 4, 8 (output stride 16), i.e. multi-grid (1, 2, 4)."""
  def body(name, **options):
    model = tiny(name, **options)
    return model.bind(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))).backbone

  assert body("deeplabv3plus_resnet101", body_options={"layers": (1, 1, 1, 3)}).multi_grid == (1, 2, 4)
  assert body("deeplabv3plus_resnet18", body_options={"layers": (1, 1, 1, 2)}).multi_grid == (1, 2)
  assert body("deeplabv3plus_resnet101", variant="standard").multi_grid == ()


@pytest.mark.parametrize("aux, params, stats", [(False, 39_638_869, 56_704), (True, 42_004_074, 57_216)])
def test_deeplabv3_resnet50_counts_match_torchvision(aux, params, stats):
  """torchvision's `deeplabv3_resnet50(num_classes=21, aux_loss=aux)`: its BatchNorm is a plain one, so the scales and
  shifts are parameters on both sides and the running statistics torchvision's buffers (42,004,074 is the count its
  weights' metadata gives)."""
  variables = jax.eval_shape(create_model("deeplabv3_resnet50", aux=aux).init, jax.random.key(0),
                             jnp.zeros((1, 64, 64, 3)))
  assert count(variables["params"]) == params
  assert count(variables["batch_stats"]) == stats


def reference_keys(name, key, **options):
  """The reference state-dict keys of a tiny `name` (the names do not depend on the widths)."""
  variables = jax.eval_shape(tiny(name, **options).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  return {key(c, path_str(p)) for c in variables for p, _ in jax.tree_util.tree_flatten_with_path(variables[c])[0]}


def test_parameter_names_are_the_reference_codes():
  tv = reference_keys("deeplabv3_resnet50", torchvision_key, aux=True)
  assert {"backbone.layer4.0.conv2.weight", "classifier.0.convs.0.0.weight", "classifier.0.convs.3.1.running_var",
          "classifier.0.convs.4.1.weight", "classifier.0.project.1.bias", "classifier.1.weight", "classifier.4.bias",
          "aux_classifier.0.weight", "aux_classifier.4.weight"} <= tv
  vainf = reference_keys("deeplabv3plus_resnet101", torchvision_key, variant="standard")
  assert {"backbone.conv1.weight", "classifier.project.0.weight", "classifier.aspp.convs.4.2.running_mean",
          "classifier.aspp.project.0.weight", "classifier.classifier.0.weight", "classifier.classifier.3.bias"} <= vainf
  assert "classifier.classifier.6.bias" in reference_keys("deeplabv3plus_resnet101", torchvision_key,
                                                          variant="standard", decoder_convs=2)
  cps = reference_keys("deeplabv3plus_resnet101", torchvision_key)
  assert {"backbone.conv1.6.weight", "backbone.bn1.weight", "head.aspp.map_convs.3.weight", "head.aspp.map_bn.weight",
          "head.aspp.global_pooling_conv.weight", "head.aspp.pool_red_conv.weight", "head.aspp.red_bn.running_var",
          "head.reduce.0.weight", "head.last_conv.4.weight", "classifier.weight", "classifier.bias"} <= cps
  mmseg = reference_keys("semantic_fpn_resnet50", mmseg_key, aux=True)
  assert {"backbone.stem.0.weight", "backbone.stem.7.running_mean", "backbone.layer2.0.downsample.1.weight",
          "neck.lateral_convs.0.conv.weight", "neck.fpn_convs.3.conv.bias", "decode_head.scale_heads.0.0.bn.weight",
          "decode_head.scale_heads.3.4.conv.weight", "decode_head.conv_seg.bias", "auxiliary_head.convs.0.conv.weight",
          "auxiliary_head.conv_seg.weight"} <= mmseg
  assert not any(k.startswith("backbone.conv1") or k.startswith("backbone.bn1") for k in mmseg)


def test_resize_weights_follow_pytorch():
  # align_corners=True keeps the corners; False samples pixel centres (2x: weights 0.25 / 0.75, edges clamped).
  np.testing.assert_allclose(interpolation_matrix(3, 5, True) @ np.array([0.0, 1.0, 4.0]), [0, 0.5, 1, 2.5, 4])
  np.testing.assert_allclose(interpolation_matrix(2, 4, False) @ np.array([0.0, 4.0]), [0, 1, 3, 4])
  for args in [(7, 3, False), (3, 8, True), (1, 5, False), (5, 1, True)]:
    np.testing.assert_allclose(interpolation_matrix(*args).sum(1), 1.0, atol=1e-6)
  x = jax.random.normal(jax.random.key(0), (1, 5, 6, 2))
  assert resize_bilinear(x, (5, 6), True) is x
  assert resize_bilinear(x, (9, 4)).shape == (1, 9, 4, 2)
  with pytest.raises(UserError, match="batch, height, width, channels"):
    resize_bilinear(x[0], (4, 4))


@pytest.mark.parametrize("name, options, message", [
    ("deeplabv3plus_resnet18", {"output_stride": 4}, "output_stride must be 8, 16 or 32; got 4"),
    ("deeplabv3plus_resnet18", {"variant": "deeplab"}, "variant must be one of standard, cps; got 'deeplab'"),
    ("deeplabv3plus_resnet18", {"decoder": False}, "'cps' is a DeepLabV3\\+"),
    ("deeplabv3plus_resnet18", {"multi_grid": (1, 2, 4)}, "one rate per block of the last stage \\(2\\)"),
    ("deeplabv3plus_resnet18", {"low_level": "C7"}, "low_level 'C7' is not a feature"),
    ("deeplabv3plus_resnet18", {"body_options": {"output_stride": 8}}, "sets its backbone's output_stride to 16"),
    ("deeplabv3plus_mobilenetv2", {"body_options": {"layers": (1, 1, 1, 1)}}, "has no option 'layers'"),
    ("semantic_fpn_resnet50", {"body_options": {"output_stride": 16}}, "sets its backbone's output_stride to 32"),
    ("resnet50", {"output_stride": 4}, "resnet output_stride must be 8, 16 or 32; got 4"),
    ("mobilenetv2_100", {"output_stride": 64}, "output_stride must be 8, 16 or 32; got 64"),
])
def test_bad_options_are_one_line_errors(name, options, message):
  model = create_model(name, **options)
  with pytest.raises(UserError, match=message) as error:
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  assert "\n" not in str(error.value)


def test_small_images_are_one_line_errors():
  model = tiny("semantic_fpn_resnet50")
  with pytest.raises(UserError, match="at least 32x32"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 48, 3)))
  assert math.ceil(H / 4) == 17  # the odd sizes above: every stride rounds up
