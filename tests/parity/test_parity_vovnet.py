"""VoVNet / eSE-VoVNet (paper 5) equal timm's `vovnet*` / `ese_vovnet*`: eval-mode logits at the
native 224 px (seeded random weights, BatchNorm and biases randomised; see timm_helpers), parameter
counts, and the multi-scale feature maps a detector takes."""
import jax
import jax.numpy as jnp
import pytest
from timm_helpers import abstract_param_count, max_logit_error

from inception_zoo import create_model

PARAMS = {"vovnet39a": 22_600_296, "vovnet57a": 36_640_296, "ese_vovnet19b_dw": 6_543_080,
          "ese_vovnet39b": 24_568_936, "ese_vovnet57b": 38_608_936, "ese_vovnet99b": 63_199_272}


# 230 px: the stem leaves 58 px, which ceil-mode pooling takes to 29/14/7 (floor mode: 28/13/6).
@pytest.mark.parametrize("name, size", [("vovnet39a", 224), ("ese_vovnet19b_dw", 224),
                                        ("ese_vovnet39b", 224), ("ese_vovnet19b_dw", 230)])
def test_logits_match_timm(name, size):
  error, scale = max_logit_error(name, PARAMS[name], size=size)
  assert scale > 0.1  # randomised BN keeps the logits away from zero, so the bound means something
  assert error <= 1e-4 * scale, (error, scale)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_matches_timm(name):
  assert abstract_param_count(name) == PARAMS[name]


@pytest.mark.parametrize("size, sides", [(224, (112, 56, 28, 14, 7)), (230, (115, 58, 29, 14, 7))])
def test_feature_maps_follow_the_stages(size, sides):
  model = create_model("ese_vovnet39b")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  _, feats = jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  # Stride 2 after the stem's second conv, then the four OSA stages (widths of Table 1); stages 2-4
  # pool in ceil mode, so an odd 58 px map becomes 29, not 28.
  widths = (64, 256, 512, 768, 1024)
  assert {k: v.shape for k, v in feats.items()} == {
      **{f"C{i + 1}": (1, s, s, c) for i, (s, c) in enumerate(zip(sides, widths))},
      "pre_logits": (1, 1024)}
