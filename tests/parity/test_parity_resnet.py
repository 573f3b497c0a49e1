"""ResNets (He et al. 2016), Wide ResNet-50-2, SE-ResNeXt-50 and SENet-154: eval-mode logits equal
timm's `resnet*` / `wide_resnet50_2` / `seresnext50_32x4d` / `senet154` (seeded random weights,
BatchNorm and SE biases randomised; see timm_helpers) at small inputs, parameter counts equal
timm's, the converter's command line takes a timm ResNet, and the CIFAR ResNets of Section 4.2 have
the paper's structure and sizes."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import timm
import torch
from timm_helpers import abstract_param_count, max_logit_error, param_count

from inception_zoo import UserError, create_model
from inception_zoo.models.resnet import CifarBlock, batch_norm

PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
          "resnet101": 44_549_160, "resnet152": 60_192_808, "wide_resnet50_2": 68_883_240,
          "resnet50s": 25_680_808, "resnet152s": 60_316_584, "seresnext50_32x4d": 27_559_896,
          "senet154": 115_088_984}


# Small inputs keep the test fast; 65 px is odd at every stride (33, 17, 9, 5, 3), so a padding or
# rounding difference from PyTorch would show; resnet50s checks the three-convolution stem,
# seresnext50_32x4d the grouped 3x3 and the SE blocks.
@pytest.mark.parametrize("name, size", [("resnet18", 65), ("resnet50", 64),
                                        ("wide_resnet50_2", 64), ("resnet50s", 64),
                                        ("seresnext50_32x4d", 64)])
def test_logits_match_timm(name, size):
  error, scale = max_logit_error(name, PARAMS[name], size=size)
  assert scale > 0.1  # randomised BN keeps the logits away from zero, so the bound means something
  assert error <= 1e-4 * scale, (error, scale)


def test_senet154_blocks_match_timm():
  """SENet-154's own options (64 groups, halved first 1x1, 3x3/2 projections, deep stem) at one
  block per stage, on both sides: the whole 154-layer network takes 18-40 s here, and its depth adds
  no code path."""
  error, scale = max_logit_error("senet154", 35_049_368, size=65, layers=(1, 1, 1, 1))
  assert scale > 0.1
  assert error <= 1e-4 * scale, (error, scale)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_matches_timm(name):
  assert abstract_param_count(name, size=64) == PARAMS[name]


def test_feature_maps_follow_the_stages():
  model = create_model("resnet50")
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  _, feats = jax.eval_shape(model.apply, shapes, x)
  sides, widths = (112, 56, 28, 14, 7), (64, 256, 512, 1024, 2048)
  assert {k: v.shape for k, v in feats.items()} == {
      **{f"C{i + 1}": (1, s, s, c) for i, (s, c) in enumerate(zip(sides, widths))},
      "pre_logits": (1, 2048)}


def test_convert_cli_takes_a_timm_resnet(tmp_path):
  torch.manual_seed(0)
  path = tmp_path / "resnet18.safetensors"
  state_dict = timm.create_model("resnet18", pretrained=False).state_dict()
  safetensors.numpy.save_file({k: v.numpy() for k, v in state_dict.items()}, str(path))
  proc = subprocess.run([sys.executable, "-m", "inception_zoo.convert", "--timm", "resnet18",
                         "--checkpoint", str(path), "--out", str(tmp_path / "weights")],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "11,689,512 parameters, 1000 classes" in proc.stdout


# Section 4.2 and Table 6: depth 6n + 2, "0.27M" ... "1.7M" parameters with option-A shortcuts.
@pytest.mark.parametrize("depth, millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85),
                                             (110, 1.7)])
def test_cifar_resnet_sizes_match_table_6(depth, millions):
  model = create_model("resnet20", depth=depth)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  count = param_count(shapes["params"])
  assert round(count / 1e6, 2 if depth < 110 else 1) == millions
  if depth == 20:
    # 19 3x3 convolutions (16/32/64 channels) + BN, and the 64 x 10 classifier; no projections.
    assert count == 269_722
    params = shapes["params"]
    assert sorted(params) == ["bn1", "conv1", "fc", "layer1", "layer2", "layer3"]
    assert all(len(params[f"layer{i}"]) == 3 for i in (1, 2, 3))
    assert not any("downsample" in block for i in (1, 2, 3) for block in params[f"layer{i}"].values())


def test_cifar_feature_maps():
  model = create_model("resnet20")
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  logits, feats = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.key(0), x), x)
  assert logits.shape == (2, 10)
  assert {k: v.shape for k, v in feats.items()} == {
      "C0": (2, 32, 32, 16), "C1": (2, 16, 16, 32), "C2": (2, 8, 8, 64), "pre_logits": (2, 64)}


def test_option_a_shortcut_is_subsampled_identity_with_zero_channels():
  block = CifarBlock(batch_norm(0.9, jnp.float32), planes=8, strides=2, drop_path=0.0)
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 4))
  shapes = jax.eval_shape(lambda x: block.init(jax.random.key(1), x, train=False), x)
  # Random weights and statistics, but a zero scale and shift on the last BN silence the residual
  # branch, leaving relu(shortcut).
  rng = np.random.default_rng(0)
  variables = jax.tree_util.tree_map_with_path(
      lambda p, v: np.zeros(v.shape, np.float32) if p[0].key == "params" and p[-2].key == "bn2"
      else rng.uniform(0.5, 1.5, v.shape).astype(np.float32), shapes)
  out = jax.jit(lambda v, x: block.apply(v, x, train=False))(variables, x)  # op by op: seconds
  expected = np.concatenate([np.maximum(x[:, ::2, ::2], 0), np.zeros((1, 3, 3, 4))], axis=-1)
  np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("name, options, message", [
    ("resnet20", {"depth": 21}, "depth must be 6n \\+ 2"),
    ("resnet20", {"widths": (16, 8, 64)}, "widths must not decrease"),
    ("resnet50", {"stem_type": "tiered"}, "stem_type must be '' or 'deep'"),
    ("resnet50", {"layers": (3, 4, 6)}, "3 stages in `layers` but 4 in `channels`"),
    ("resnet50", {"attn": "cbam"}, "attn must be '' or 'se'"),
    ("resnet18", {"cardinality": 32}, "basic blocks take cardinality 1 and base_width 64"),
])
def test_bad_options_are_one_line_errors(name, options, message):
  model = create_model(name, **options)
  with pytest.raises(UserError, match=message):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
