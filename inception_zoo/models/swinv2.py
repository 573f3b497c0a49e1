"""Swin Transformer V2.

Liu, Hu, Lin, Yao, Xie, Wei, Ning, Cao, Zhang, Dong, Wei, Guo. "Swin Transformer V2: Scaling Up
Capacity and Resolution", CVPR 2022 (arXiv:2111.09883), Sections 3.2-3.3 and Table 1 (SwinV2-T/S/B).

Swin's hierarchy (Liu et al., ICCV 2021): a 4x4 patch embedding, four stages at strides 4/8/16/32
(stages 2-4 start with patch merging: the 2x2 neighbours concatenated, a Linear to twice the width,
here followed by LayerNorm as V2 does), and blocks that alternate self-attention inside
non-overlapping windows with attention inside windows shifted by half a window (a cyclic shift plus
a mask that keeps tokens from different regions of the map apart). V2 changes the block:

- residual post-norm: x + LN(Attn(x)), x + LN(MLP(x)) (Sec. 3.2), with the norms' scales
  initialised at zero as the official code does (`post_norm_init`), so every block starts as the
  identity;
- scaled cosine attention: cos(q, k) / tau + B per head, with a learnable log(1 / tau) clamped at
  log(1 / 0.01) (Eq. 2);
- continuous relative position bias: B = 16 sigmoid(G(dx, dy)), G a two-layer MLP (512 hidden
  units, ReLU) over log-spaced relative coordinates sign(d) log2(1 + |d|) / log2(8), d scaled so
  that the pre-training window's largest offset is 8 (Eqs. 3-4).

The relative coordinates, their index and the shift mask are not parameters: they are computed with
NumPy at trace time from the window size and the input's size, so weights trained at one window or
resolution load unchanged into a model with another (`window_size`, `img_size`); set
`pretrained_window_sizes` to the training windows to keep the coordinates' scale, as the paper's
fine-tuning does. As in timm, a stage whose map is no larger than the window attends over the whole
map without shifting, and a map that the window does not divide is padded at the bottom/right.

Module names follow timm's `SwinTransformerV2`, so `inception_zoo.convert` loads `swinv2_*` weights
by rule.
"""
import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.layers import Mlp, Seq, check_image, dense_init, drop_path, drop_path_rates, layer_norm
from inception_zoo.layers.window import (relative_coords_table, relative_position_index, shift_mask,
                                         window_and_shift, window_partition, window_reverse)
from inception_zoo.registry import register_model

# 4x4 patches and three 2x2 mergings leave one token at stride 32.
MIN_SIZE = 32
CPB_HIDDEN = 512  # the position-bias MLP's width (paper and timm)
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # tau >= 0.01
# timm initialises every Linear with a truncated normal of std 0.02 (`dense_init`) and zero biases;
# the patch embedding is a Conv2d and keeps PyTorch's default (kaiming_uniform with a = sqrt(5)).
patch_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def normalize(x, eps: float = 1e-12):
  """x / max(|x|, eps) over the last axis (PyTorch's F.normalize). The square root is taken after the
  max: the keys of padding tokens are zero, and |x|'s gradient at zero is NaN."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps ** 2))


class CpbMlp(nn.Module):
  """G of Eq. 3: relative coordinates (..., 2) -> one bias per head, through 512 ReLU units (timm's
  nn.Sequential, hence layers_0 and layers_2)."""
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, coords):
    x = nn.Dense(CPB_HIDDEN, kernel_init=dense_init, dtype=self.dtype, name="layers_0")(coords)
    return nn.Dense(self.num_heads, use_bias=False, kernel_init=dense_init, dtype=self.dtype,
                    name="layers_2")(nn.relu(x))


class WindowAttention(nn.Module):
  """Scaled cosine self-attention inside each window, with the continuous position bias.

  Takes (B, windows, N, C) and the shift mask (windows, N, N) or None."""
  num_heads: int
  window: Tuple[int, int]
  pretrained_window: Tuple[int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask: Optional[np.ndarray]):
    *lead, n, c = x.shape
    heads = self.num_heads
    # timm's qkv has a bias for q and v only (k's is fixed at zero).
    q_bias = self.param("q_bias", nn.initializers.zeros, (c,))
    v_bias = self.param("v_bias", nn.initializers.zeros, (c,))
    qkv = nn.Dense(3 * c, use_bias=False, kernel_init=dense_init, dtype=self.dtype, name="qkv")(x)
    qkv = qkv + jnp.concatenate([q_bias, jnp.zeros_like(q_bias), v_bias]).astype(qkv.dtype)
    qkv = jnp.moveaxis(qkv.reshape(*lead, n, 3, heads, c // heads), -3, 0)  # 3, B, windows, N, heads, d
    q, k, v = (jnp.swapaxes(t, -2, -3) for t in qkv)  # B, windows, heads, N, d

    logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(10.0)), (heads, 1, 1))
    attn = normalize(q) @ jnp.swapaxes(normalize(k), -1, -2)
    attn = attn * jnp.exp(jnp.minimum(logit_scale, LOGIT_SCALE_MAX)).astype(attn.dtype)

    table = relative_coords_table(self.window, self.pretrained_window).reshape(-1, 2)
    bias = CpbMlp(heads, self.dtype, name="cpb_mlp")(jnp.asarray(table))
    bias = bias[relative_position_index(self.window).reshape(-1)]
    bias = 16.0 * jax.nn.sigmoid(bias.reshape(n, n, heads).transpose(2, 0, 1))
    attn = attn + bias.astype(attn.dtype)
    if mask is not None:
      attn = attn + jnp.asarray(mask, attn.dtype)[:, None]  # same mask for every head
    attn = jax.nn.softmax(attn, axis=-1)

    out = jnp.swapaxes(attn @ v, -2, -3).reshape(*lead, n, c)
    return nn.Dense(c, kernel_init=dense_init, dtype=self.dtype, name="proj")(out)


class SwinV2Block(nn.Module):
  """(Shifted) window attention and an MLP, each with a residual post-norm, on (B, H, W, C)."""
  num_heads: int
  window_size: int
  shifted: bool
  pretrained_window: int  # 0: normalise the coordinates by the block's own window
  mlp_ratio: float
  drop_path: float
  post_norm_init: float
  dtype: Any

  @nn.compact
  def __call__(self, x, *, train):
    _, h, w, c = x.shape
    (wh, sh), (ww, sw) = (window_and_shift(s, self.window_size, self.shifted) for s in (h, w))
    y = jnp.roll(x, (-sh, -sw), axis=(1, 2))
    y = jnp.pad(y, ((0, 0), (0, -h % wh), (0, -w % ww), (0, 0)))  # timm pads after the shift
    size = y.shape[1:3]
    mask = shift_mask(size, (wh, ww), (sh, sw)) if sh or sw else None
    y = WindowAttention(self.num_heads, (wh, ww), (self.pretrained_window,) * 2, self.dtype,
                        name="attn")(window_partition(y, (wh, ww)), mask)
    y = window_reverse(y, (wh, ww), size)[:, :h, :w]
    y = jnp.roll(y, (sh, sw), axis=(1, 2))
    x = x + drop_path(self.drop_path, train)(layer_norm(self.dtype, "norm1", init=self.post_norm_init)(y))
    y = Mlp(int(c * self.mlp_ratio), dtype=self.dtype, name="mlp")(x)
    return x + drop_path(self.drop_path, train)(layer_norm(self.dtype, "norm2", init=self.post_norm_init)(y))


class PatchMerging(nn.Module):
  """2x2 neighbours concatenated (odd sizes padded), Linear without bias, LayerNorm (V2's order)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    h, w = (h + 1) // 2, (w + 1) // 2
    # Channel order (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]), as Swin's.
    x = x.reshape(b, h, 2, w, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, h, w, 4 * c)
    x = nn.Dense(self.features, use_bias=False, kernel_init=dense_init, dtype=self.dtype,
                 name="reduction")(x)
    return layer_norm(self.dtype, "norm")(x)


class PatchEmbed(nn.Module):
  """Non-overlapping `patch`x`patch` convolution, then LayerNorm (timm's PatchEmbed with a norm)."""
  features: int
  patch: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, (self.patch,) * 2, (self.patch,) * 2, padding="VALID",
                kernel_init=patch_init, dtype=self.dtype, name="proj")(x)
    return layer_norm(self.dtype, "norm")(x)


class ClassifierHead(nn.Module):
  """Global average pooling, dropout, Linear. Returns `(logits, pre_logits)`, pre_logits being the
  pooled features; with `num_classes=0` (as timm) the logits are those pre_logits, and with
  `global_pool=''` as well they are the un-pooled (B, H, W, C) map (what SimMIM's decoder reads)."""
  num_classes: int
  drop_rate: float = 0.0
  global_pool: str = "avg"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train):
    pre_logits = jnp.mean(x, axis=(1, 2)) if self.global_pool == "avg" else x
    if self.num_classes == 0:
      return pre_logits, pre_logits
    x = nn.Dropout(self.drop_rate, deterministic=not train)(pre_logits)
    return nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name="fc")(x), pre_logits


class SwinV2Stage(nn.Module):
  dim: int
  downsample: bool
  num_heads: int
  window_size: int
  pretrained_window: int
  mlp_ratio: float
  drop_paths: Tuple[float, ...]  # one rate per block
  post_norm_init: float
  dtype: Any

  @nn.compact
  def __call__(self, x, *, train):
    if self.downsample:
      x = PatchMerging(self.dim, self.dtype, name="downsample")(x)
    blocks = [SwinV2Block(self.num_heads, self.window_size, i % 2 == 1, self.pretrained_window,
                          self.mlp_ratio, rate, self.post_norm_init, self.dtype)
              for i, rate in enumerate(self.drop_paths)]
    return Seq(blocks, name="blocks")(x, train=train)


class SwinTransformerV2(nn.Module):
  """Returns `(logits, features)`: features holds the stage outputs, C2..C5 with 4x4 patches (C<i> at
  stride 2^i), and pre_logits (the pooled output of the final LayerNorm)."""
  num_classes: int = 1000
  img_size: int = 256  # the input must be img_size x img_size (timm's strict_img_size)
  patch_size: int = 4
  embed_dim: int = 96  # doubles at each stage
  depths: Tuple[int, ...] = (2, 2, 6, 2)
  num_heads: Tuple[int, ...] = (3, 6, 12, 24)
  window_size: int = 8
  pretrained_window_sizes: Tuple[int, ...] = ()  # per stage; () or 0: each stage's own window
  mlp_ratio: float = 4.0
  drop_rate: float = 0.0  # head dropout
  global_pool: str = "avg"  # 'avg' or '' (no pooling: only with num_classes=0, as timm)
  drop_path_rate: float = 0.0  # stochastic depth at the last block
  post_norm_init: float = 0.0  # scale of the blocks' post-norms at init (official code: 0)
  dtype: Any = jnp.float32

  head_name = "head"  # timm's head module (weight conversion, head reset)
  timm_classifier = "head.fc"  # its Linear, whose rows count the classes
  min_size = MIN_SIZE
  # 2x2 patches keep 2x2 tokens at the last stage, where attention still depends on q and k;
  # post-norms at 1 so that every parameter gets a gradient at the first step.
  tiny_options = {"img_size": MIN_SIZE, "patch_size": 2, "window_size": 4, "embed_dim": 16,
                  "depths": (2, 1, 1, 1), "num_heads": (1, 2, 2, 4), "post_norm_init": 1.0}

  def check(self, x):
    check_image(x, "swinv2", self.patch_size)
    if x.shape[1:3] != (self.img_size, self.img_size):
      raise UserError(f"swinv2 was built for {self.img_size}x{self.img_size} images (option img_size); "
                      f"got {x.shape[1]}x{x.shape[2]}")
    if self.global_pool not in ("avg", "") or self.global_pool == "" and self.num_classes:
      raise UserError(f"swinv2: global_pool is 'avg', or '' with num_classes=0; got "
                      f"'{self.global_pool}' with {self.num_classes} classes")
    stages = len(self.depths)
    if len(self.num_heads) != stages or len(self.pretrained_window_sizes) not in (0, stages):
      raise UserError(f"swinv2: num_heads {tuple(self.num_heads)} and pretrained_window_sizes "
                      f"{tuple(self.pretrained_window_sizes)} need one entry per stage of depths "
                      f"{tuple(self.depths)}")
    if any(self.embed_dim * 2 ** i % h for i, h in enumerate(self.num_heads)):
      raise UserError(f"swinv2: the stage widths {self.embed_dim} x 2^i do not divide into num_heads "
                      f"{tuple(self.num_heads)}")

  @nn.compact
  def __call__(self, x, *, train: bool = False, mask=None, mask_token=None):
    """`mask` (B, H/patch, W/patch) bool and `mask_token` (embed_dim,): SimMIM pre-training
    (projects/simmim/simmim.py) replaces the embeddings of masked patches by the token before the stages."""
    self.check(x)
    x = PatchEmbed(self.embed_dim, self.patch_size, self.dtype, name="patch_embed")(x.astype(self.dtype))
    if mask is not None:
      x = jnp.where(mask[..., None], mask_token.astype(x.dtype), x)
    rates = drop_path_rates(self.drop_path_rate, self.depths)
    pretrained = self.pretrained_window_sizes or (0,) * len(self.depths)
    stages = [SwinV2Stage(self.embed_dim * 2 ** i, i > 0, self.num_heads[i], self.window_size,
                          pretrained[i], self.mlp_ratio, rates[i], self.post_norm_init, self.dtype)
              for i in range(len(self.depths))]
    taps = tuple(range(len(stages)))
    x, feats = Seq(stages, name="layers")(x, train=train, capture=taps)
    first = round(math.log2(self.patch_size))  # C<i> has nominal stride 2^i
    out = {f"C{first + i}": feats[i] for i in taps}
    x = layer_norm(self.dtype, "norm")(x)
    logits, out["pre_logits"] = ClassifierHead(self.num_classes, self.drop_rate, self.global_pool,
                                               self.dtype, name="head")(x, train=train)
    return logits, out


# Table 1 (SwinV2-T/S/B: C = 96/96/128, depths 2-2-6-2 / 2-2-18-2, 32 channels per head), at the
# ImageNet-1K 256 px setting of Table 2 with 8x8 or 16x16 windows, as timm.
VARIANTS = {
    "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}


def _build(variant: str, window: int, kwargs) -> SwinTransformerV2:
  return SwinTransformerV2(**{**VARIANTS[variant], "window_size": window, **kwargs})


@register_model
def swinv2_tiny_window8_256(**kwargs) -> SwinTransformerV2:
  """SwinV2-T, 8x8 windows, 256 px (28,347,154 parameters with 1000 classes, as timm)."""
  return _build("tiny", 8, kwargs)


@register_model
def swinv2_tiny_window16_256(**kwargs) -> SwinTransformerV2:
  """SwinV2-T, 16x16 windows, 256 px (28,347,154 parameters with 1000 classes, as timm)."""
  return _build("tiny", 16, kwargs)


@register_model
def swinv2_small_window8_256(**kwargs) -> SwinTransformerV2:
  """SwinV2-S, 8x8 windows, 256 px (49,728,418 parameters with 1000 classes, as timm)."""
  return _build("small", 8, kwargs)


@register_model
def swinv2_small_window16_256(**kwargs) -> SwinTransformerV2:
  """SwinV2-S, 16x16 windows, 256 px (49,728,418 parameters with 1000 classes, as timm)."""
  return _build("small", 16, kwargs)


@register_model
def swinv2_base_window8_256(**kwargs) -> SwinTransformerV2:
  """SwinV2-B, 8x8 windows, 256 px (87,918,816 parameters with 1000 classes, as timm)."""
  return _build("base", 8, kwargs)


@register_model
def swinv2_base_window16_256(**kwargs) -> SwinTransformerV2:
  """SwinV2-B, 16x16 windows, 256 px (87,918,816 parameters with 1000 classes, as timm)."""
  return _build("base", 16, kwargs)
