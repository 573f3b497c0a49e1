"""Inception-v3 (Szegedy et al. 2016) equals timm's `inception_v3`: eval-mode logits at 75 px, the
smallest input its valid-padded stem and reductions take (seeded random weights, BatchNorm
randomised; see timm_helpers), the parameter count, the auxiliary classifier's weights, and the
feature grids of Table 1 at 299 px."""
import jax
import jax.numpy as jnp
import pytest
import timm
from timm_helpers import abstract_param_count, max_logit_error, param_count

from inception_zoo import UserError, create_model
from inception_zoo.convert import convert_timm

PARAMS = 23_834_568  # timm's default: no auxiliary classifier
PARAMS_AUX = 27_161_264


def test_logits_match_timm():
  # 75 px (37, 35, 17, 15, 7, 3, 1 after the stem's steps and the reductions) keeps the compile small;
  # the odd sizes at every valid-padded step would show a padding or pooling difference.
  error, scale = max_logit_error("inception_v3", PARAMS, size=75)
  assert scale > 0.1
  assert error <= 1e-4 * scale, (error, scale)


def test_param_count_matches_timm():
  assert abstract_param_count("inception_v3", size=75) == PARAMS


def test_aux_classifier_takes_timm_weights():
  # The converter is strict (every tensor used, every leaf filled, shapes equal), so this checks the
  # auxiliary head's names and shapes against timm's `aux_logits=True` model without running it.
  state_dict = {k: v.numpy() for k, v in
                timm.create_model("inception_v3", aux_logits=True).state_dict().items()}
  _, variables = convert_timm("inception_v3", state_dict, image_size=299, aux_logits=True)
  assert param_count(variables["params"]) == PARAMS_AUX


def test_feature_grids_follow_table_1():
  model = create_model("inception_v3", aux_logits=True)
  x = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
  _, feats = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.key(0), x), x)
  # 147x147x64, 71x71x192, then the 35x35, 17x17 and 8x8 grids of the Inception modules.
  assert {k: v.shape for k, v in feats.items()} == {
      "C1": (1, 147, 147, 64), "C2": (1, 71, 71, 192), "C3": (1, 35, 35, 288),
      "C4": (1, 17, 17, 768), "C5": (1, 8, 8, 2048), "aux_logits": (1, 1000), "pre_logits": (1, 2048)}


@pytest.mark.parametrize("options, size, message", [
    ({}, 74, "at least 75x75 pixels"),
    ({"aux_logits": True}, 298, "at least 299x299 pixels"),
    ({"depths": (3, 5, 2)}, 75, r"depths .* must be between \(1, 1, 1\) and \(3, 4, 2\); got \(3, 5, 2\)"),
])
def test_bad_inputs_and_options_are_one_line_errors(options, size, message):
  model = create_model("inception_v3", **options)
  with pytest.raises(UserError, match=message):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
