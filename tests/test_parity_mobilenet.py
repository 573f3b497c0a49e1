"""MobileNet v1/v2 and EfficientNet-B0 (paper 17's networks) equal timm's `mobilenetv1_100`,
`mobilenetv2_100` and `efficientnet_b0`: eval-mode logits (seeded random weights, BatchNorm and biases
randomised; see timm_helpers) at 100 px, where the 5x5 stride-2 depthwise convs meet odd maps (25, 13 px) and
PyTorch's symmetric padding matters, parameter
counts, the feature maps, and the 1x1 convolutions sparse inference looks up by path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from timm_helpers import abstract_param_count, max_logit_error

from inception_zoo import create_model
from inception_zoo.sharding import path_str

PARAMS = {"mobilenetv1_100": 4_231_976, "mobilenetv2_100": 3_504_872, "efficientnet_b0": 5_288_548}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_logits_match_timm(name):
  error, scale = max_logit_error(name, PARAMS[name], size=100, batch=2)
  assert scale > 0.1  # randomised BN keeps the logits away from zero, so the bound means something
  assert error <= 1e-4 * scale, (error, scale)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_matches_timm(name):
  assert abstract_param_count(name) == PARAMS[name]
