"""MobileNet v1/v2 and EfficientNet-B0 (paper 17's networks) equal timm's `mobilenetv1_100`,
`mobilenetv2_100` and `efficientnet_b0`: eval-mode logits (seeded random weights, BatchNorm and biases
randomised; see timm_helpers) at 100 px, where the stride-2 5x5 depthwise convolutions meet odd maps
(25 and 13 px) so PyTorch's symmetric padding matters; parameter counts; the feature maps; and the
1x1 convolutions that sparse inference finds by path and kernel shape; the width multiplier against
timm's `mobilenetv2_050`; multiply-adds against the papers' tables."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from timm_helpers import abstract_param_count, max_logit_error, randomized_timm

from inception_zoo import UserError, create_model, list_models
from inception_zoo.convert import convert_timm
from inception_zoo.pytree import path_str
from inception_zoo.tools.flops import jaxpr_macs

PARAMS = {"mobilenetv1_100": 4_231_976, "mobilenetv2_100": 3_504_872, "efficientnet_b0": 5_288_548}


def abstract_variables(name, size=224):
  return jax.eval_shape(create_model(name).init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_logits_match_timm(name):
  error, scale = max_logit_error(name, PARAMS[name], size=100, batch=2)
  assert scale > 0.1  # randomised BN keeps the logits away from zero, so the bound means something
  assert error <= 1e-4 * scale, (error, scale)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_matches_timm(name):
  assert name in list_models()
  assert abstract_param_count(name) == PARAMS[name]


# Mult-adds at 224 px as the papers print them: MobileNets Table 8 (569M) and EfficientNet Table 2
# (0.39B) within half their last digit; MobileNetV2 Table 4 rounds to 300M (timm's count is 300.8M,
# as ours), so 1% there.
@pytest.mark.parametrize("name, paper, tolerance", [("mobilenetv1_100", 569e6, 0.5e6),
                                                    ("mobilenetv2_100", 300e6, 3e6),
                                                    ("efficientnet_b0", 0.39e9, 0.005e9)])
def test_macs_match_the_papers(name, paper, tolerance):
  model = create_model(name)
  image = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x))(abstract_variables(name), image)
  assert abs(jaxpr_macs(jaxpr.jaxpr) - paper) <= tolerance


@pytest.mark.parametrize("name, widths", [("mobilenetv1_100", (64, 128, 256, 512, 1024, 1024)),
                                          ("mobilenetv2_100", (16, 24, 32, 96, 320, 1280)),
                                          ("efficientnet_b0", (16, 24, 40, 112, 320, 1280))])
def test_feature_maps_end_each_stride(name, widths):
  # C<i>: the last stage at stride 2^i (timm's features_only maps); pre_logits after the head conv.
  model = create_model(name)
  variables = abstract_variables(name)
  _, feats = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert {k: v.shape for k, v in feats.items()} == {
      **{f"C{i + 1}": (1, 112 >> i, 112 >> i, c) for i, c in enumerate(widths[:5])},
      "pre_logits": (1, widths[5])}


# Depthwise-separable blocks have one pointwise conv (`conv_pw`), inverted residuals an expansion
# (`conv_pw`) and a projection (`conv_pwl`); EfficientNet's SE adds two more per block.
@pytest.mark.parametrize("name, counts", [
    ("mobilenetv1_100", {"conv_pw": 13}),
    ("mobilenetv2_100", {"conv_pw": 17, "conv_pwl": 16, "conv_head": 1}),
    ("efficientnet_b0", {"conv_pw": 16, "conv_pwl": 15, "conv_head": 1, "se/conv_reduce": 16,
                         "se/conv_expand": 16})])
def test_pointwise_convolutions_are_found_by_path(name, counts):
  kernels = {path_str(p): leaf.shape for p, leaf in
             jax.tree_util.tree_flatten_with_path(abstract_variables(name)["params"])[0]
             if path_str(p).endswith("kernel") and leaf.shape[:2] == (1, 1)}
  pattern = re.compile(r"(?:blocks/layers_\d+/layers_\d+/)?(.+)/kernel")
  found = {}
  for path in kernels:
    role = pattern.fullmatch(path).group(1)
    found[role] = found.get(role, 0) + 1
  assert found == counts
  if name == "mobilenetv1_100":
    assert kernels["blocks/layers_1/layers_0/conv_pw/kernel"] == (1, 1, 64, 128)


def test_width_multiplier_matches_timm():
  # MobileNet v2 at width 0.5 (timm `mobilenetv2_050`): every layer narrowed and rounded to a multiple
  # of 8 except the 1280-channel head conv, which keeps its width (MobileNet v2, Section 5.1).
  reference = randomized_timm("mobilenetv2_050")
  model, variables = convert_timm("mobilenetv2_100", {k: v.numpy() for k, v in
                                                      reference.state_dict().items()},
                                  image_size=64, width=0.5)
  assert variables["params"]["conv_head"]["kernel"].shape == (1, 1, 160, 1280)
  x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert np.abs(np.asarray(logits) - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("options, message", [
    ({"act": "gelu"}, r"act must be one of \['relu', 'relu6', 'silu'\]; got 'gelu'"),
    ({"width": 0.0}, r"width and depth must be positive")])
def test_bad_option_is_a_one_line_error(options, message):
  with pytest.raises(UserError, match=message):
    jax.eval_shape(create_model("efficientnet_b0", **options).init, jax.random.key(0),
                   jnp.zeros((1, 32, 32, 3)))
