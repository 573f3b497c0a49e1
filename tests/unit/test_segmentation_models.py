"""Segmentation models (DeepLabV3 / V3+, Semantic FPN) and the backbones' output stride, torch-free and mostly
abstract (shapes only): outputs at the input resolution for every registered name, the dilated backbones' map sizes,
torchvision's parameter counts, the reference codes' parameter names, one-line errors for bad options, MGD's
backbone FLOP ratios against its paper (numerical parity with the PyTorch codes is
tests/parity/test_parity_segmentation.py and test_parity_mgd_networks.py)."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_zoo import UserError, create_model, list_models
from inception_zoo.convert import mmseg_key, torchvision_key
from inception_zoo.layers.resize import interpolation_matrix, resize_bilinear
from inception_zoo.models.mobilenet import Block as MobileNetBlock
from inception_zoo.pytree import path_str
from inception_zoo.registry import model_options
from inception_zoo.tools import flops

NAMES = ["deeplabv3_resnet50", "deeplabv3plus_mobilenetv2", "deeplabv3plus_mobilenetv2_mgd", "deeplabv3plus_resnet18",
         "deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "deeplabv3plus_wide_resnet50_2", "semantic_fpn_resnet50"]
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
  # MGD's MobileNet v2 student and WRN-34-2 teacher (inception_zoo.projects.mgd): CPS's head, their own backbones.
  mobile = create_model("deeplabv3plus_mobilenetv2_mgd")
  assert mobile.variant == "cps" and mobile.output_stride == 32 and mobile.aspp_rates == (6, 12, 18)
  assert mobile.low_level_channels == 24 and mobile.body_options == {"head_chs": 0, "tail_dilations": (2, 4, 8)}
  wide = create_model("deeplabv3plus_wide_resnet50_2", body_options={"layers": (1, 1, 1, 3)})
  assert (wide.variant, wide.output_stride) == ("cps", 16)
  assert wide.body_options == {"stem_type": "", "stem_width": 64, "layers": (1, 1, 1, 3)}  # the 7x7 stem


@pytest.mark.parametrize("name", NAMES)
def test_outputs_at_the_input_resolution(name):
  x = jax.ShapeDtypeStruct((2, H, W, 3), jnp.float32)
  model = tiny(name)
  # CPS's layout also returns the decoder's output (MGD's `v3plus_feature`) at the stride-4 map's size.
  features = {"features": (2, math.ceil(H / 4), math.ceil(W / 4), model.decoder_channels)} if getattr(
      model, "variant", "") == "cps" else {}
  _, out = shapes(model, x)
  assert {k: v.shape for k, v in out.items()} == {"logits": (2, H, W, K), **features}
  model = tiny(name, aux=True)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  out, updates = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)}),
      variables, x)
  assert {k: v.shape for k, v in out.items()} == {"logits": (2, H, W, K), "aux_logits": (2, H, W, K), **features}
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


def block_settings(model, x):
  """(stride, depthwise dilation) of each MobileNet block, in order."""
  settings = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, MobileNetBlock) and context.method_name == "__call__":
      settings.append((context.module.stride, context.module.dilation))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(model.init, jax.random.key(0), x)
  return settings


def test_tail_dilations_dilate_the_last_blocks_and_keep_the_strides():
  """MGD's `_nostride_dilate` on features[15:18]: the last three blocks' depthwise convolutions at 2, 4, 8, the
  strides (and so the maps and C5 at stride 32) and the parameters unchanged."""
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  plain = create_model("mobilenetv2_100", head_chs=0)
  dilated = create_model("mobilenetv2_100", head_chs=0, tail_dilations=(2, 4, 8))
  before, after = block_settings(plain, x), block_settings(dilated, x)
  assert len(after) == 17 and after[:14] == before[:14]
  assert after[14:] == [(1, 2), (1, 4), (1, 8)] and before[14:] == [(1, 1)] * 3
  (v_plain, (_, f_plain)), (v_dilated, (_, f_dilated)) = shapes(plain, x), shapes(dilated, x)
  assert {k: v.shape for k, v in f_plain.items()} == {k: v.shape for k, v in f_dilated.items()}
  assert f_dilated["C5"].shape[1] == 2 and count(v_plain["params"]) == count(v_dilated["params"])


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
    ("mobilenetv2_100", {"tail_dilations": (2,) * 18}, "tail_dilations has 18 rates but the network only 17 blocks"),
    ("mobilenetv2_100", {"tail_dilations": (2, 4, 8), "output_stride": 16}, "tail_dilations takes output_stride 32"),
    ("deeplabv3plus_mobilenetv2_mgd", {"output_stride": 8}, "tail_dilations takes output_stride 32; got 8"),
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


def backbone_counts(name, size=512):
  """(MACs, BatchNorm output elements) of the backbone as the segmenter `name` builds and runs it (dilated), on
  one size x size image: one abstract trace (the parameter shapes come from a 64 px init; they do not depend on the
  size)."""
  model = create_model(name)
  variables = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  backbone = model.bind(variables).backbone.clone(parent=None, name=None)
  variables = {c: v["backbone"] for c, v in variables.items()}
  bn = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      bn.append(math.prod(out.shape))
    return out

  with nn.intercept_methods(record):
    jaxpr = jax.make_jaxpr(lambda v, x: backbone.apply(v, x, train=False))(
        variables, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  return flops.jaxpr_macs(jaxpr.jaxpr), sum(bn)


# Backbone MACs at 512 px as the segmenters run them: ResNet-18 (deep stem 32, 32, 64), WRN-34-2 (timm's
# wide_resnet50_2, 7x7 stem) and ResNet-101 (deep stem 64, 64, 128) at output stride 16 with layer4 at rates 2, 4, 8
# (2, 4 for ResNet-18); MobileNet v2 at output stride 32, its last three blocks dilated. Dilation changes no count
# (padded taps are counted, as fvcore and thop do). BatchNorm elements: the outputs of all BatchNorms.
BACKBONES = {"resnet18": ("deeplabv3plus_resnet18", 17_169_383_424, 19_136_512),
             "mobilenetv2": ("deeplabv3plus_mobilenetv2_mgd", 1_459_847_168, 34_562_048),
             "wrn34_2": ("deeplabv3plus_wide_resnet50_2", 90_945_093_632, 85_458_944),
             "resnet101": ("deeplabv3plus_resnet101", 58_900_611_072, 105_644_032)}
# The abstract: "the FLOPs of the model backbone is compressed by 3.4-5.3x (ResNet-18) and 38.7-59.6x
# (MobileNetv2)"; the low end is teacher 2 (ResNet-101), the high end teacher 1 (WRN-34-2).
PAPER_RATIOS = {("wrn34_2", "resnet18"): 5.3, ("resnet101", "resnet18"): 3.4,
                ("wrn34_2", "mobilenetv2"): 59.6, ("resnet101", "mobilenetv2"): 38.7}


def test_mgd_backbone_flop_ratios_match_the_paper():
  """The paper's teacher / student backbone ratios. In MACs (convolutions only) the ResNet-18 ones match (5.297, 3.431)
  but the MobileNet v2 ones come out 4.3-4.5% higher (62.30, 40.35 against 59.6, 38.7). The paper counted with thop,
  as the official network.py's `__main__` does (`profile(model, inputs=(input,))` on 1x3x512x512): its convolution
  count is these MACs, and thop 0.0.31 (pip's release from May 2020 to June 2022) adds 2 ops per BatchNorm output
  element in eval mode (`count_bn`) and nothing for ReLU / ReLU6 (`zero_ops`). That term is 4.7% of MobileNet v2's
  MACs (cheap depthwise convolutions between BatchNorms on the expanded widths) and under 0.4% of the ResNets'; with it
  the four ratios are 5.295, 3.435, 59.59 and 38.66, the paper's to its one decimal. (thop 0.0.31 on the official
  backbones gives exactly MACs + 2 x BatchNorm elements of the counts below: 1,528,971,264 for the MobileNet.)"""
  counts = {k: backbone_counts(name) for k, (name, _, _) in BACKBONES.items()}
  for k, (name, macs, bn) in BACKBONES.items():
    assert counts[k] == (macs, bn), (name, counts[k])
  for (teacher, student), paper in PAPER_RATIOS.items():
    macs = counts[teacher][0] / counts[student][0]
    thop = (counts[teacher][0] + 2 * counts[teacher][1]) / (counts[student][0] + 2 * counts[student][1])
    print(f"{teacher} / {student}: MACs {macs:.3f}, thop's count {thop:.3f}, paper {paper}")
    assert abs(thop - paper) < 0.05, (teacher, student, thop, paper)
    if student == "resnet18":
      assert abs(macs - paper) < 0.05, (teacher, student, macs, paper)
    else:  # without thop's BatchNorm term: 4.3% (ResNet-101) and 4.5% (WRN-34-2) above the paper
      assert 1.04 < macs / paper < 1.05, (teacher, student, macs, paper)
