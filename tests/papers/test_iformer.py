"""iFormer (Si et al., "Inception Transformer", NeurIPS 2022) against the paper's ImageNet table and the
official code (sail-sg/iFormer, models/inception_transformer.py): parameter counts, MACs, stage shapes,
the per-block frequency split, the Inception mixer against a PyTorch transcription of the official
one, position-embedding interpolation, the transformer sharding rules, and input errors.

Nothing here compiles a full-size network: counts and shapes come from `jax.eval_shape` and traced
jaxprs (no parameters materialised)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.sharding import PartitionSpec as P

from inception_zoo import UserError, create_model, sharding
from inception_zoo.models import iformer
from inception_zoo.pytree import path_str
from inception_zoo.tools import flops

# name -> (the paper's params in millions, its GFLOPs at 224 px and at 384 px, the official code's
# fvcore count at 224 px from its model docstrings)
PAPER = {"iformer_small": (20, 4.8, 16.1, 4.849), "iformer_base": (48, 9.4, 30.5, 9.379),
         "iformer_large": (87, 14.0, 45.3, 14.048)}
IMAGE = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)


def official_param_count(depths, embed_dims, num_heads, attention_heads, num_classes=1000) -> int:
  """The official InceptionTransformer's parameter count, written out module by module from its code
  (independently of the Flax model): biases wherever PyTorch's default bias=True stands, none where
  the code passes bias=False, BatchNorm's weight and bias (its running statistics are buffers)."""
  c0 = embed_dims[0]
  # FirstPatchEmbed: conv 3->C/2 (3x3, bias), BN, conv C/2->C (3x3, bias), BN.
  n = 27 * (c0 // 2) + c0 // 2 + c0 + 9 * (c0 // 2) * c0 + c0 + 2 * c0
  grid, heads = 56, iter(attention_heads)  # pos_embed grids: 224 // 4, halved per stage
  for stage, (depth, c, h) in enumerate(zip(depths, embed_dims, num_heads)):
    if stage:  # PatchEmbed: conv 3x3 with bias, BN
      n += 9 * embed_dims[stage - 1] * c + c + 2 * c
    n += grid * grid * c
    grid //= 2
    for _ in range(depth):
      low = next(heads) * (c // h)
      high, half = c - low, (c - low) // 2
      n += 2 * c + 2 * c  # norm1, norm2
      n += half * 2 * half + 9 * 2 * half  # HighMixer conv1 (1x1, no bias), proj1 (depthwise, no bias)
      n += half * 2 * half + 2 * half  # HighMixer proj2 (1x1, bias)
      n += low * 3 * low + 3 * low  # LowMixer qkv (qkv_bias=True)
      fused = low + 2 * high
      n += 9 * fused + fused * c + c  # conv_fuse (depthwise, no bias), proj (1x1, bias)
      n += c * 4 * c + 4 * c + 4 * c * c + c  # Mlp fc1, fc2
      n += 2 * c if stage >= 2 else 0  # layer_scale_1/2: use_layer_scale reaches stages 3-4 only
  return n + 2 * embed_dims[-1] + embed_dims[-1] * num_classes + num_classes  # norm, head


@pytest.fixture(scope="module")
def abstract():
  """name -> (model, abstract variables at 224 px)."""
  out = {}
  for name in PAPER:
    model = create_model(name)
    out[name] = model, jax.eval_shape(model.init, jax.random.key(0), IMAGE)
  return out


@pytest.mark.parametrize("name", PAPER)
def test_parameter_counts_equal_the_official_code_and_the_paper(name, abstract):
  model, variables = abstract[name]
  count = sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
  variant = iformer.VARIANTS[name.removeprefix("iformer_")]
  assert count == official_param_count(**variant)
  # The official docstrings' 19.866M / 47.866M / 86.637M, and the paper's 20M / 48M / 87M.
  assert count == {"iformer_small": 19_866_344, "iformer_base": 47_866_216,
                   "iformer_large": 86_637_096}[name]
  assert round(count / 1e6) == PAPER[name][0]


@pytest.mark.parametrize("name", PAPER)
def test_macs_match_the_paper(name, abstract):
  """MACs in the papers' convention (convolutions and matrix products) within 1.5% of the paper's at 224
  and 384 px, and at most 1% under the official fvcore count, which also charges the norms,
  poolings and upsampling (iFormer-S: 4.826 against 4.849)."""
  model, variables = abstract[name]
  _, at224, at384, fvcore = PAPER[name]

  def gmacs(size):
    image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x)[0])(variables, image).jaxpr
    return flops.jaxpr_macs(jaxpr) / 1e9

  small = gmacs(224)
  assert small == pytest.approx(at224, rel=0.015)
  assert 0.99 * fvcore < small < fvcore
  assert gmacs(384) == pytest.approx(at384, rel=0.015)  # position embeddings interpolated 56 -> 96


@pytest.mark.parametrize("name", PAPER)
def test_stage_shapes_and_the_frequency_split(name, abstract):
  model, variables = abstract[name]
  variant = iformer.VARIANTS[name.removeprefix("iformer_")]
  _, feats = jax.eval_shape(model.apply, variables, IMAGE)
  assert [feats[f"C{i}"].shape for i in (2, 3, 4, 5)] == [
      (1, s, s, c) for s, c in zip((56, 28, 14, 7), variant["embed_dims"])]
  assert feats["pre_logits"].shape == (1, variant["embed_dims"][-1])

  params, heads, shares = variables["params"], iter(variant["attention_heads"]), []
  for stage, (depth, c, h) in enumerate(zip(variant["depths"], variant["embed_dims"],
                                            variant["num_heads"])):
    assert params[f"pos_embed{stage + 1}"].shape == (1, 56 >> stage, 56 >> stage, c)
    for j in range(depth):
      block = params[f"blocks{stage + 1}"][f"layers_{j}"]
      low = next(heads) * c // h  # the official attention_head x head_dim
      high = c - low
      mixer = block["attn"]
      assert mixer["qkv"]["kernel"].shape == (low, 3 * low)
      assert mixer["high_mixer"]["conv1"]["kernel"].shape == (high // 2, high)
      assert mixer["high_mixer"]["proj2"]["kernel"].shape == (high // 2, high)
      assert mixer["conv_fuse"]["kernel"].shape == (3, 3, 1, 2 * high + low)
      assert mixer["proj"]["kernel"].shape == (2 * high + low, c)
      assert block["mlp"]["fc1"]["kernel"].shape == (c, 4 * c)
      assert ("layer_scale_1" in block) == (stage >= 2)
      shares.append(low / c)
  # The frequency ramp: the low-frequency share never falls with depth, from 1/3 to over 0.9.
  assert shares == sorted(shares) and shares[0] == pytest.approx(1 / 3) and shares[-1] > 0.9


class TorchMixer(torch.nn.Module):
  """The official Mixer (HighMixer + LowMixer + fuse), transcribed in PyTorch, NCHW."""

  def __init__(self, dim, num_heads, attention_head, pool_size):
    super().__init__()
    self.low = attention_head * (dim // num_heads)
    self.high, self.heads, self.pool_size = dim - self.low, attention_head, pool_size
    half, fused = self.high // 2, self.low + 2 * self.high
    self.conv1 = torch.nn.Conv2d(half, 2 * half, 1, bias=False)
    self.proj1 = torch.nn.Conv2d(2 * half, 2 * half, 3, padding=1, groups=2 * half, bias=False)
    self.proj2 = torch.nn.Conv2d(half, 2 * half, 1)
    self.qkv = torch.nn.Linear(self.low, 3 * self.low)
    self.conv_fuse = torch.nn.Conv2d(fused, fused, 3, padding=1, groups=fused, bias=False)
    self.proj = torch.nn.Conv2d(fused, dim, 1)

  def forward(self, x):
    hx, lx = x[:, :self.high], x[:, self.high:]
    half = self.high // 2
    cx = F.gelu(self.proj1(self.conv1(hx[:, :half])))
    px = F.gelu(self.proj2(F.max_pool2d(hx[:, half:], 3, 1, 1)))
    p = self.pool_size
    xa = F.avg_pool2d(lx, p, p, count_include_pad=False) if p > 1 else lx
    b, c, h, w = xa.shape
    qkv = self.qkv(xa.permute(0, 2, 3, 1).reshape(b, h * w, c))
    q, k, v = qkv.reshape(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
    xa = (attn @ v).transpose(2, 3).reshape(b, c, h, w)
    if p > 1:
      xa = F.interpolate(xa, scale_factor=p)  # nn.Upsample's default: nearest
    y = torch.cat([cx, px, xa], dim=1)
    return self.proj(y + self.conv_fuse(y))


@pytest.mark.parametrize("pool_size, attention_heads", [(2, 1), (1, 3)])
def test_inception_mixer_equals_the_official_mixer(pool_size, attention_heads):
  dim, num_heads = 64, 4
  mixer = iformer.InceptionMixer(num_heads, attention_heads, pool_size)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, dim))
  params = jax.jit(mixer.init)(jax.random.key(1), x)["params"]
  # Perturbed so that the zero-initialised biases are compared too.
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), params)

  ref = TorchMixer(dim, num_heads, attention_heads, pool_size)
  t = lambda a: torch.tensor(np.asarray(a))  # noqa: E731
  one = lambda d: t(d["kernel"]).T[:, :, None, None]  # noqa: E731  (in, out) -> (out, in, 1, 1)
  dw = lambda d: t(d["kernel"]).permute(3, 2, 0, 1)  # noqa: E731  (3, 3, 1, C) -> (C, 1, 3, 3)
  hm = params["high_mixer"]
  with torch.no_grad():
    ref.conv1.weight.copy_(one(hm["conv1"]))
    ref.proj1.weight.copy_(dw(hm["proj1"]))
    ref.proj2.weight.copy_(one(hm["proj2"]))
    ref.proj2.bias.copy_(t(hm["proj2"]["bias"]))
    ref.qkv.weight.copy_(t(params["qkv"]["kernel"]).T)
    ref.qkv.bias.copy_(t(params["qkv"]["bias"]))
    ref.conv_fuse.weight.copy_(dw(params["conv_fuse"]))
    ref.proj.weight.copy_(one(params["proj"]))
    ref.proj.bias.copy_(t(params["proj"]["bias"]))
    expected = ref(t(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  got = np.asarray(jax.jit(mixer.apply)({"params": params}, x))
  np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("size", [(12, 12), (5, 9)])
def test_position_embedding_interpolation_equals_pytorch(size):
  pos = np.random.default_rng(0).normal(size=(1, 7, 7, 6)).astype(np.float32)
  got = iformer.resize_pos_embed(jnp.asarray(pos), size)
  expected = F.interpolate(torch.tensor(pos).permute(0, 3, 1, 2), size=size, mode="bilinear")
  np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_tensor_parallel_rules_shard_the_mixer_and_the_mlp(abstract):
  _, variables = abstract["iformer_small"]
  mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "model": 4})
  specs = sharding.infer_shardings(variables["params"], mesh, sharding.TENSOR_PARALLEL_RULES)
  flat = {path_str(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(specs)[0]}
  expected = {"attn/qkv/kernel": P("fsdp", "model"), "attn/proj/kernel": P("model", "fsdp"),
              "mlp/fc1/kernel": P("fsdp", "model"), "mlp/fc1/bias": P("model"),
              "mlp/fc2/kernel": P("model", "fsdp")}
  for suffix, spec in expected.items():
    matched = [s for p, s in flat.items() if p.endswith(suffix)]
    assert len(matched) == 18 and all(s == spec for s in matched), suffix  # every block of iFormer-S


@pytest.mark.parametrize("options, size, message", [
    ({}, 40, r"stage 2's 5x5 map does not divide by its pool size 2 \(got 40x40 images"),
    ({"attention_heads": (1, 2)}, 224, r"attention_heads needs one entry per block \(18 for depths"),
    ({"attention_heads": (3,) * 18}, 224, r"stage 1 \(width 96, 3 heads\) cannot give 3 heads"),
    ({"num_heads": (3, 5, 10, 12)}, 224, r"stage 2's width 192 does not divide into 5 heads"),
    ({"pool_sizes": (2, 2)}, 224, r"pool_sizes \(2, 2\) needs one entry per stage"),
])
def test_bad_options_and_inputs_are_one_line_errors(options, size, message):
  model = create_model("iformer_small", **options)
  with pytest.raises(UserError, match=message):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
