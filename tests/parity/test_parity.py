"""Numerical parity with timm (an independent PyTorch implementation) and the papers' sizes.

timm models are built with seeded random weights, BatchNorm statistics and affine parameters are
randomised too (so the test sees them), the state dict goes through `inception_zoo.convert`, and the
eval-mode logits at 299 px must agree to 1e-4 x the logits' scale.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
# The references come with the test extra (`pip install -e '.[test]'`); no silent skip without them.
import timm
import torch

from inception_zoo import create_model
from inception_zoo.convert import convert_timm


def randomized_timm(name: str, seed: int = 0):
  torch.manual_seed(seed)
  model = timm.create_model(name, pretrained=False).eval()
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0.0, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.normal_(1.0, 0.2)
        m.bias.normal_(0.0, 0.2)
  return model


def param_count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("name, expected", [("inception_v4", 42_679_816),
                                            ("inception_resnet_v2", 55_843_464)])
def test_logits_match_timm(name, expected):
  reference = randomized_timm(name)
  state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
  model, variables = convert_timm(name, state_dict)
  assert param_count(variables["params"]) == expected == sum(p.numel() for p in reference.parameters())
  x = np.random.default_rng(0).normal(size=(2, 299, 299, 3)).astype(np.float32)
  with torch.no_grad():
    ref = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  out, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  scale = np.abs(ref).max()
  assert scale > 0.1  # randomised BN keeps the logits away from zero, so the bound means something
  np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_param_count_without_torch_matches_timm(name):
  counts = {"inception_v4": 42_679_816, "inception_resnet_v2": 55_843_464}
  model = create_model(name)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
  assert param_count(shapes["params"]) == counts[name]


def _conv(cin, cout, kh, kw=None):  # conv without bias + BN scale/bias
  return cin * cout * kh * (kw or kh) + 2 * cout


def _linear1x1(cin, cout):  # residual expansion: conv with bias, no BN
  return cin * cout + cout


def inception_resnet_v1_count(num_classes=1000) -> int:
  """Parameter count written out from Figs. 10-15 of the paper, independently of the model code."""
  stem = (_conv(3, 32, 3) + _conv(32, 32, 3) + _conv(32, 64, 3) + _conv(64, 80, 1) + _conv(80, 192, 3)
          + _conv(192, 256, 3))
  block_a = (_conv(256, 32, 1) + _conv(256, 32, 1) + _conv(32, 32, 3) + _conv(256, 32, 1)
             + _conv(32, 32, 3) + _conv(32, 32, 3) + _linear1x1(96, 256))
  red_a = _conv(256, 384, 3) + _conv(256, 192, 1) + _conv(192, 192, 3) + _conv(192, 256, 3)
  block_b = (_conv(896, 128, 1) + _conv(896, 128, 1) + _conv(128, 128, 1, 7) + _conv(128, 128, 7, 1)
             + _linear1x1(256, 896))
  red_b = (_conv(896, 256, 1) + _conv(256, 384, 3) + _conv(896, 256, 1) + _conv(256, 256, 3)
           + _conv(896, 256, 1) + _conv(256, 256, 3) + _conv(256, 256, 3))
  block_c = (_conv(1792, 192, 1) + _conv(1792, 192, 1) + _conv(192, 192, 1, 3) + _conv(192, 192, 3, 1)
             + _linear1x1(384, 1792))
  head = 1792 * num_classes + num_classes
  return stem + 5 * block_a + red_a + 10 * block_b + red_b + 5 * block_c + head


def test_inception_resnet_v1_follows_the_figures():
  model = create_model("inception_resnet_v1")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
  assert param_count(shapes["params"]) == inception_resnet_v1_count() == 22_756_328
  _, feats = jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
  # Fig. 14 ends at 35x35x256; Reduction-A gives 17x17x896, Reduction-B 8x8x1792 (Figs. 7, 12, 15).
  assert feats["C3"].shape == (1, 35, 35, 256)
  assert feats["C4"].shape == (1, 17, 17, 896)
  assert feats["C5"].shape == (1, 8, 8, 1792)


def test_inception_resnet_v2_paper_layout():
  model = create_model("inception_resnet_v2_paper")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
  _, feats = jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32))
  # Inception-v4 stem (35x35x384), Reduction-A with k,l,m,n = 256,256,384,384 -> 17x17x1152,
  # Reduction-B (Fig. 18) -> 8x8x(1152+384+288+320).
  assert feats["C3"].shape == (1, 35, 35, 384)
  assert feats["C4"].shape == (1, 17, 17, 1152)
  assert feats["C5"].shape == (1, 8, 8, 2144)
  assert len(shapes["params"]["repeat"]) == 5 and len(shapes["params"]["repeat_1"]) == 10
  assert len(shapes["params"]["repeat_2"]) == 5
