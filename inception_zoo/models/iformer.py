"""Inception Transformer (iFormer).

Si, Yu, Zhou, Zhou, Wang, Yan. "Inception Transformer", NeurIPS 2022 (arXiv:2205.12956), Section 3
(the Inception mixer and the frequency ramp) and its ImageNet-1K results (iFormer-S/B/L: 20M / 48M /
87M parameters, 4.8 / 9.4 / 14.0 GFLOPs at 224 px), as the official code (sail-sg/iFormer,
models/inception_transformer.py) builds them.

A four-stage transformer whose token mixer, the Inception mixer, splits the C channels of each block
into a high-frequency part of C_h channels and a low-frequency part of C_l = a x C / heads
channels (a = the block's number of attention heads, `attention_heads`):

- high frequency, itself halved: 1x1 linear -> 3x3 depthwise convolution -> GELU on one half,
  max-pool 3x3 -> 1x1 linear -> GELU on the other; each branch doubles its channels (C_h/2 -> C_h),
  as the official code does;
- low frequency: average pooling by the stage's pool size (2 in stages 1-2, none in 3-4), multi-head
  self-attention over the pooled tokens with a heads, nearest upsampling back;
- the 2 C_h + C_l concatenated channels (high first) are fused by a 3x3 depthwise convolution added to
  its input and projected back to C by a 1x1 linear.

The frequency ramp is the per-block `attention_heads` list: C_l grows with depth (iFormer-S:
1, 3, 7-9, 11 of 3, 6, 10, 12 heads per stage), so early blocks are mostly convolutional and late
ones mostly attention. Blocks are pre-norm (LayerNorm, eps 1e-6) with a 4x GELU MLP, stochastic depth
rising linearly over all blocks, and layer scale (1e-6) in stages 3-4 only (the official code passes
`use_layer_scale` to those stages' blocks alone). The stem is two 3x3 stride-2 convolutions (C/2 then
C, BatchNorm after each, GELU between); stages 2-4 start with a 3x3 stride-2 convolution and
BatchNorm. Each stage adds a learned position embedding laid out for `img_size` = 224 (56/28/14/7
maps, also in the official 384 px models); other map sizes interpolate it bilinearly (PyTorch's
`F.interpolate(mode='bilinear')`, half-pixel centres, no antialiasing). The head is LayerNorm,
global average pooling and a Linear.

Names follow the official module tree (`patch_embed`, `patch_embed2`, `pos_embed1`, `blocks1`,
`attn/high_mixer`, `attn/conv_fuse`, `norm`, `head`) except for two choices that keep the transformer
sharding rules (`sharding.TENSOR_PARALLEL_RULES`) applicable: the attention's `qkv` sits directly in
the mixer (`attn/qkv`, the official `attn.low_mixer.qkv`), and the 1x1 convolutions are Dense layers
(the same weights, transposed), so `attn/proj` is a 2-D kernel.
"""
from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import Mlp, Seq, check_image, dense_init, drop_path, drop_path_rates, layer_norm
from inception_zoo.registry import register_model

# Five stride-2 convolutions (two in the stem): 32 px leave one token at stride 32.
MIN_SIZE = 32
# The official init: truncated normal of std 0.02 for every Linear, Conv2d and position embedding
# (the head included: `self.apply` calls `_init_vit_weights` without a name), zero biases.


def gelu(x):
  return nn.gelu(x, approximate=False)


def dense(features: int, name: str, dtype, use_bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, kernel_init=dense_init, dtype=dtype, name=name)


def depthwise3x3(channels: int, name: str, dtype) -> nn.Conv:
  return nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=channels,
                 use_bias=False, kernel_init=dense_init, dtype=dtype, name=name)


def split_channels(dim: int, num_heads: int, attention_heads: int) -> Tuple[int, int]:
  """(C_h, C_l) of a block of width `dim`: C_l = attention_heads x the head width dim / num_heads."""
  low = attention_heads * (dim // num_heads)
  return dim - low, low


class HighMixer(nn.Module):
  """The high-frequency mixer on C_h channels; returns 2 C_h: [conv branch, pool branch]."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    half = x.shape[-1] // 2
    cx, px = x[..., :half], x[..., half:]
    cx = dense(2 * half, "conv1", self.dtype, use_bias=False)(cx)
    cx = gelu(depthwise3x3(2 * half, "proj1", self.dtype)(cx))
    px = nn.max_pool(px, (3, 3), (1, 1), ((1, 1), (1, 1)))  # PyTorch pads max-pooling with -inf too
    px = gelu(dense(2 * half, "proj2", self.dtype)(px))
    return jnp.concatenate([cx, px], axis=-1)


class InceptionMixer(nn.Module):
  """The Inception token mixer on (B, H, W, C)."""
  num_heads: int  # the stage's heads: they set the head width C / num_heads
  attention_heads: int  # heads of the low-frequency attention (C_l = attention_heads x head width)
  pool_size: int
  qkv_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    high, low = split_channels(c, self.num_heads, self.attention_heads)
    hx = HighMixer(self.dtype, name="high_mixer")(x[..., :high])

    # Low frequency: attention among pooled tokens, then nearest upsampling.
    p, heads, head_dim = self.pool_size, self.attention_heads, low // self.attention_heads
    lx = x[..., high:]
    if p > 1:
      lx = nn.avg_pool(lx, (p, p), (p, p))
    ph, pw = lx.shape[1:3]
    qkv = dense(3 * low, "qkv", self.dtype, use_bias=self.qkv_bias)(lx.reshape(b, ph * pw, low))
    q, k, v = jnp.moveaxis(qkv.reshape(b, ph * pw, 3, heads, head_dim), (2, 3), (0, 2))  # 3 x (B, a, N, d)
    attn = jax.nn.softmax((q * head_dim ** -0.5) @ jnp.swapaxes(k, -1, -2), axis=-1)
    lx = jnp.swapaxes(attn @ v, 1, 2).reshape(b, ph, pw, low)  # channels head-major, as the official
    if p > 1:
      lx = jnp.repeat(jnp.repeat(lx, p, axis=1), p, axis=2)

    y = jnp.concatenate([hx, lx], axis=-1)  # 2 C_h + C_l channels
    y = y + depthwise3x3(y.shape[-1], "conv_fuse", self.dtype)(y)
    return dense(c, "proj", self.dtype)(y)


class IFormerBlock(nn.Module):
  """x + DropPath(gamma_1 Mixer(LN(x))), then x + DropPath(gamma_2 Mlp(LN(x)))."""
  num_heads: int
  attention_heads: int
  pool_size: int
  mlp_ratio: float
  layer_scale: float  # gamma init; 0: no layer scale (stages 1-2 of the official models)
  drop_path: float
  drop_rate: float
  dtype: Any

  @nn.compact
  def __call__(self, x, *, train):
    dim = x.shape[-1]

    def scaled(y, name):
      if not self.layer_scale:
        return y
      return y * self.param(name, nn.initializers.constant(self.layer_scale), (dim,)).astype(y.dtype)

    y = InceptionMixer(self.num_heads, self.attention_heads, self.pool_size, dtype=self.dtype,
                       name="attn")(layer_norm(self.dtype, "norm1", eps=1e-6)(x))
    x = x + drop_path(self.drop_path, train)(scaled(y, "layer_scale_1"))
    y = Mlp(int(dim * self.mlp_ratio), self.drop_rate, self.dtype, name="mlp")(
        layer_norm(self.dtype, "norm2", eps=1e-6)(x), train=train)
    return x + drop_path(self.drop_path, train)(scaled(y, "layer_scale_2"))


class PatchEmbed(nn.Module):
  """3x3 stride-2 convolution (padding 1) and BatchNorm; `stem`: two of them (C/2 then C), GELU
  between (the official FirstPatchEmbed)."""
  features: int
  stem: bool
  bn_momentum: float
  dtype: Any

  @nn.compact
  def __call__(self, x, *, train):
    def conv_bn(features, conv, norm, x):
      x = nn.Conv(features, (3, 3), (2, 2), padding=((1, 1), (1, 1)), kernel_init=dense_init,
                  dtype=self.dtype, name=conv)(x)
      # PyTorch BatchNorm2d defaults (eps 1e-5; momentum 0.1 is Flax's 0.9).
      return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                          dtype=self.dtype, name=norm)(x)

    if not self.stem:
      return conv_bn(self.features, "proj", "norm", x)
    x = gelu(conv_bn(self.features // 2, "proj1", "norm1", x))
    return conv_bn(self.features, "proj2", "norm2", x)


def resize_pos_embed(pos, size: Tuple[int, int]):
  """(1, g, g, C) -> (1, H, W, C) as the official `F.interpolate(mode='bilinear')`: half-pixel
  centres (align_corners=False) and no antialiasing when shrinking."""
  if pos.shape[1:3] == tuple(size):
    return pos
  return jax.image.resize(pos, (1, *size, pos.shape[-1]), "bilinear", antialias=False)


class InceptionTransformer(nn.Module):
  """Returns `(logits, features)`: features holds the stage outputs C2..C5 (strides 4..32) and
  pre_logits (the average of the final LayerNorm's tokens)."""
  num_classes: int = 1000
  img_size: int = 224  # size the position embeddings are laid out for (224 in every official model)
  depths: Tuple[int, ...] = (3, 3, 9, 3)
  embed_dims: Tuple[int, ...] = (96, 192, 320, 384)
  num_heads: Tuple[int, ...] = (3, 6, 10, 12)
  # Low-frequency attention heads of every block, in order (the frequency ramp).
  attention_heads: Tuple[int, ...] = (1,) * 3 + (3,) * 3 + (7,) * 4 + (9,) * 5 + (11,) * 3
  pool_sizes: Tuple[int, ...] = (2, 2, 1, 1)  # low-frequency pooling per stage
  layer_scales: Tuple[float, ...] = (0.0, 0.0, 1e-6, 1e-6)  # gamma init per stage; 0: none
  mlp_ratio: float = 4.0
  drop_rate: float = 0.0  # dropout in the MLPs (the official `drop_rate`)
  drop_path_rate: float = 0.0  # stochastic depth at the last block
  bn_momentum: float = 0.9  # PyTorch's 0.1
  dtype: Any = jnp.float32

  head_name = "head"  # the official head Linear (head reset)
  min_size = MIN_SIZE
  tiny_options = {"img_size": MIN_SIZE, "depths": (1, 1, 1, 1), "embed_dims": (16, 32, 48, 64),
                  "num_heads": (2, 2, 3, 4), "attention_heads": (1, 1, 2, 3)}

  def map_sizes(self, h: int, w: int) -> Tuple[Tuple[int, int], ...]:
    """(H, W) of each stage's map: every 3x3 stride-2 convolution with padding 1 halves, rounding up."""
    sizes = []
    for _ in self.depths:
      h, w = -(-h // (4 if not sizes else 2)), -(-w // (4 if not sizes else 2))
      sizes.append((h, w))
    return tuple(sizes)

  def check(self, x):
    check_image(x, "iformer", MIN_SIZE)
    stages = len(self.depths)
    per_stage = dict(embed_dims=self.embed_dims, num_heads=self.num_heads, pool_sizes=self.pool_sizes,
                     layer_scales=self.layer_scales)
    for field, value in per_stage.items():
      if len(value) != stages:
        raise UserError(f"iformer: {field} {tuple(value)} needs one entry per stage of depths "
                        f"{tuple(self.depths)}")
    if len(self.attention_heads) != sum(self.depths):
      raise UserError(f"iformer: attention_heads needs one entry per block ({sum(self.depths)} for "
                      f"depths {tuple(self.depths)}); got {len(self.attention_heads)}")
    heads = iter(self.attention_heads)
    for i, (depth, dim, n) in enumerate(zip(self.depths, self.embed_dims, self.num_heads)):
      if dim % n:
        raise UserError(f"iformer: stage {i + 1}'s width {dim} does not divide into {n} heads")
      for a in [next(heads) for _ in range(depth)]:
        high, _ = split_channels(dim, n, a)
        if not 0 < a < n or high % 2:
          raise UserError(f"iformer: stage {i + 1} (width {dim}, {n} heads) cannot give {a} heads to "
                          f"attention: it needs 0 < attention heads < {n} and an even number of "
                          f"high-frequency channels (got {high})")
    for i, ((h, w), p) in enumerate(zip(self.map_sizes(*x.shape[1:3]), self.pool_sizes)):
      if h % p or w % p:
        raise UserError(f"iformer: stage {i + 1}'s {h}x{w} map does not divide by its pool size {p} "
                        f"(got {x.shape[1]}x{x.shape[2]} images; multiples of 32 always work)")

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    self.check(x)
    x = x.astype(self.dtype)
    rates = drop_path_rates(self.drop_path_rate, self.depths)
    starts = [sum(self.depths[:i]) for i in range(len(self.depths))]
    out = {}
    grid = self.img_size // 4
    for i, dim in enumerate(self.embed_dims):
      x = PatchEmbed(dim, i == 0, self.bn_momentum, self.dtype,
                     name="patch_embed" if i == 0 else f"patch_embed{i + 1}")(x, train=train)
      pos = self.param(f"pos_embed{i + 1}", dense_init, (1, grid, grid, dim))
      x = x + resize_pos_embed(pos, x.shape[1:3]).astype(x.dtype)
      grid //= 2
      blocks = [IFormerBlock(self.num_heads[i], self.attention_heads[starts[i] + j], self.pool_sizes[i],
                             self.mlp_ratio, self.layer_scales[i], rate, self.drop_rate, self.dtype)
                for j, rate in enumerate(rates[i])]
      x = Seq(blocks, name=f"blocks{i + 1}")(x, train=train)
      out[f"C{i + 2}"] = x
    pre_logits = jnp.mean(layer_norm(self.dtype, "norm", eps=1e-6)(x), axis=(1, 2))
    out["pre_logits"] = pre_logits
    if self.num_classes == 0:
      return pre_logits, out
    return dense(self.num_classes, "head", self.dtype)(pre_logits), out


# The paper's variants as the official code writes them: widths, heads and per-block attention heads. The paper's
# 384 px models are these networks fine-tuned at 384 px (position embeddings interpolated).
VARIANTS = {
    "small": dict(depths=(3, 3, 9, 3), embed_dims=(96, 192, 320, 384), num_heads=(3, 6, 10, 12),
                  attention_heads=(1,) * 3 + (3,) * 3 + (7,) * 4 + (9,) * 5 + (11,) * 3),
    "base": dict(depths=(4, 6, 14, 6), embed_dims=(96, 192, 384, 512), num_heads=(3, 6, 12, 16),
                 attention_heads=(1,) * 4 + (3,) * 6 + (8,) * 7 + (10,) * 7 + (15,) * 6),
    "large": dict(depths=(4, 6, 18, 8), embed_dims=(96, 192, 448, 640), num_heads=(3, 6, 14, 20),
                  attention_heads=(1,) * 4 + (3,) * 6 + (10,) * 9 + (12,) * 9 + (19,) * 8),
}


@register_model
def iformer_small(**kwargs) -> InceptionTransformer:
  """iFormer-S (19,866,344 parameters with 1000 classes, as the official code; paper: 20M, 4.8G)."""
  return InceptionTransformer(**{**VARIANTS["small"], **kwargs})


@register_model
def iformer_base(**kwargs) -> InceptionTransformer:
  """iFormer-B (47,866,216 parameters with 1000 classes, as the official code; paper: 48M, 9.4G)."""
  return InceptionTransformer(**{**VARIANTS["base"], **kwargs})


@register_model
def iformer_large(**kwargs) -> InceptionTransformer:
  """iFormer-L (86,637,096 parameters with 1000 classes, as the official code; paper: 87M, 14.0G)."""
  return InceptionTransformer(**{**VARIANTS["large"], **kwargs})
