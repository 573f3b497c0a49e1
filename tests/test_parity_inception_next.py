"""InceptionNeXt (paper 4) equals timm's `inception_next_*`: eval-mode logits at the native 224 px
(seeded random weights, BatchNorm/LayerNorm, biases and layer scales randomised; see timm_helpers),
parameter counts, and the stage feature maps."""
import jax
import jax.numpy as jnp
import pytest
from timm_helpers import abstract_param_count, max_logit_error

from inception_zoo import create_model
from inception_zoo.convert import timm_key

PARAMS = {"inception_next_atto": 4_156_520, "inception_next_tiny": 28_055_680,
          "inception_next_small": 49_374_016, "inception_next_base": 86_672_136}


@pytest.mark.parametrize("name", ["inception_next_atto", "inception_next_tiny"])
def test_logits_match_timm(name):
  error, scale = max_logit_error(name, PARAMS[name])
  assert scale > 0.1  # randomised norms keep the logits away from zero, so the bound means something
  assert error <= 1e-4 * scale, (error, scale)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_matches_timm(name):
  assert abstract_param_count(name) == PARAMS[name]


def test_layer_scale_keeps_its_timm_name():
  assert timm_key("params", "stages/layers_2/blocks/layers_5/gamma") == "stages.2.blocks.5.gamma"


def test_feature_maps_follow_the_stages():
  model = create_model("inception_next_tiny")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  _, feats = jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  # Table 1: stride 4/8/16/32 at widths 96/192/384/768; the MLP head widens 768 by 3.
  assert {k: v.shape for k, v in feats.items()} == {
      "C2": (1, 56, 56, 96), "C3": (1, 28, 28, 192), "C4": (1, 14, 14, 384), "C5": (1, 7, 7, 768),
      "pre_logits": (1, 2304)}
