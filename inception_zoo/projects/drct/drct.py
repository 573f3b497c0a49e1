"""DRCT: the Dense-residual-connected Transformer for image super-resolution.

Hsu, Lee, Chou, "DRCT: Saving Image Super-resolution away from Information Bottleneck", CVPR 2024
Workshops (NTIRE), arXiv:2404.00722; official code github.com/ming053l/DRCT (`drct/archs/DRCT_arch.py`),
which spandrel's `DRCT` reproduces.

The network (Sec. 3): a 3x3 convolution to `embed_dim` channels (shallow features), then Residual Dense
Groups (RDG) of five Swin Transformer layers with dense connections: layer i sees the concatenation of
the group's input and the i - 1 earlier layers' outputs (embed_dim + (i - 1) gc channels), and a 1x1
convolution ("adjust", LeakyReLU 0.2 after all but the last) emits gc growth channels, the last one
embed_dim; the group returns 0.2 x_5 + x. After the groups: LayerNorm, a 3x3 convolution and the global
residual to the shallow features; the pixel-shuffle upsampler (3x3 conv to 64 + LeakyReLU, 2x stages of
conv + PixelShuffle, 3x3 conv to RGB) gives the image, with the RGB mean removed before and added after.

The Swin layers are Swin V1's (Liu et al., ICCV 2021): pre-norm, window attention with a learned
relative-position bias table and scaled dot products, an MLP; they alternate unshifted / shifted windows.
The partition, reverse and shift-mask helpers are Swin V2's (`inception_zoo.models.swinv2`).

Our reading where the paper is silent, following the public code:
- the first layer of a group has num_heads heads, a dense layer of width d has num_heads - (d mod
  num_heads) (so 212 channels with 6 heads get 4);
- the 4th and 5th layers of every group have MLP ratio 1, the first three `mlp_ratio`;
- every layer of group g uses the stochastic-depth rate of the group's first position in
  linspace(0, drop_path_rate, 6 * groups) (the code sizes the schedule for 6 layers per group);
- a map no larger than the window is attended whole and never shifted (Swin's rule); inputs whose sides
  the window does not divide are reflect-padded at the bottom/right and the output cropped, as the
  official test-time `pre_process`/`post_process` do.

Module names follow the official/spandrel state dict, so `inception_zoo.convert.timm_to_flax` loads its
weights (from a state dict of numpy arrays). The relative-position bias table is stored per head, (heads, (2w-1)^2):
the transpose of the PyTorch table, which the rule transposes like any 2-D weight.
"""
from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import (Mlp, Seq, check_image, dense_init, drop_path, drop_path_rates, layer_norm,
                                  pixel_shuffle)
from inception_zoo.layers.window import (relative_position_index, shift_mask, window_and_shift,
                                         window_partition, window_reverse)
from inception_zoo.registry import register_model

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K's mean, as the official code
LAYERS_PER_GROUP = 5
# PyTorch's Conv2d default init (kaiming_uniform with a = sqrt(5)); the official code keeps it for convs.
conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def head_count(width: int, num_heads: int, first: bool) -> int:
  """Heads of a group's layer of `width` channels: `num_heads` for the first layer, num_heads -
  (width mod num_heads) for the dense ones (the public code's rule)."""
  heads = num_heads if first else num_heads - width % num_heads
  if width % heads:
    raise UserError(f"drct: a layer of width {width} gets {heads} heads (from num_heads {num_heads}), "
                    f"which do not divide it; pick embed_dim, growth and num_heads that do")
  return heads


def conv(features: int, kernel: int, name: str, dtype) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), padding=kernel // 2, kernel_init=conv_init, dtype=dtype,
                 name=name)


class WindowAttention(nn.Module):
  """Swin V1 multi-head self-attention inside each window: softmax(q k^T / sqrt(d) + B + mask) v, B from
  a learned table indexed by the relative offset. Takes (B, windows, N, C) and a mask or None."""
  num_heads: int
  window: Tuple[int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    *lead, n, c = x.shape
    heads, (wh, ww) = self.num_heads, self.window
    qkv = nn.Dense(3 * c, kernel_init=dense_init, dtype=self.dtype, name="qkv")(x)
    qkv = jnp.moveaxis(qkv.reshape(*lead, n, 3, heads, c // heads), -3, 0)
    q, k, v = (jnp.swapaxes(t, -2, -3) for t in qkv)  # B, windows, heads, N, d
    attn = (q * (c // heads) ** -0.5) @ jnp.swapaxes(k, -1, -2)
    table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                       (heads, (2 * wh - 1) * (2 * ww - 1)))
    bias = table[:, relative_position_index(self.window).reshape(-1)].reshape(heads, n, n)
    attn = attn + bias.astype(attn.dtype)
    if mask is not None:
      attn = attn + jnp.asarray(mask, attn.dtype)[:, None]
    out = jnp.swapaxes(jax.nn.softmax(attn, axis=-1) @ v, -2, -3).reshape(*lead, n, c)
    return nn.Dense(c, kernel_init=dense_init, dtype=self.dtype, name="proj")(out)


class SwinBlock(nn.Module):
  """Swin V1 layer on (B, H, W, C), H and W multiples of the window (or no larger than it)."""
  num_heads: int
  window_size: int
  shifted: bool
  mlp_ratio: float
  drop_path: float
  dtype: Any

  @nn.compact
  def __call__(self, x, *, train):
    _, h, w, c = x.shape
    (wh, sh), (ww, sw) = (window_and_shift(s, self.window_size, self.shifted) for s in (h, w))
    y = jnp.roll(layer_norm(self.dtype, "norm1")(x), (-sh, -sw), axis=(1, 2))
    mask = shift_mask((h, w), (wh, ww), (sh, sw)) if sh or sw else None
    y = WindowAttention(self.num_heads, (wh, ww), self.dtype, name="attn")(
        window_partition(y, (wh, ww)), mask)
    y = jnp.roll(window_reverse(y, (wh, ww), (h, w)), (sh, sw), axis=(1, 2))
    x = x + drop_path(self.drop_path, train)(y)
    y = Mlp(int(c * self.mlp_ratio), dtype=self.dtype, name="mlp")(layer_norm(self.dtype, "norm2")(x))
    return x + drop_path(self.drop_path, train)(y)


class RDG(nn.Module):
  """Residual Dense Group: five Swin layers densely connected through 1x1 growth convolutions."""
  num_heads: int
  window_size: int
  mlp_ratio: float
  growth: int
  drop_path: float
  dtype: Any

  @nn.compact
  def __call__(self, x, *, train):
    dim, feats = x.shape[-1], [x]
    for i in range(1, LAYERS_PER_GROUP + 1):
      inp = jnp.concatenate(feats, axis=-1)
      width = inp.shape[-1]
      y = SwinBlock(head_count(width, self.num_heads, i == 1), self.window_size, i % 2 == 0,
                    self.mlp_ratio if i <= 3 else 1.0, self.drop_path, self.dtype,
                    name=f"swin{i}")(inp, train=train)
      last = i == LAYERS_PER_GROUP
      y = conv(dim if last else self.growth, 1, f"adjust{i}", self.dtype)(y)
      feats.append(y if last else nn.leaky_relu(y, 0.2))
    return feats[-1] * 0.2 + x


class ConvLReLU(nn.Module):
  """The official `conv_before_upsample`: Sequential(Conv2d 3x3, LeakyReLU(0.01))."""
  features: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    return nn.leaky_relu(conv(self.features, 3, "layers_0", self.dtype)(x), 0.01)


class Upsample(nn.Module):
  """x2^n by n (3x3 conv to 4C, PixelShuffle 2) stages, or x3 by one conv to 9C and PixelShuffle 3;
  convolutions at the even positions of the official Sequential."""
  scale: int
  dtype: Any

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    factors = [3] if self.scale == 3 else [2] * (self.scale.bit_length() - 1)
    for i, r in enumerate(factors):
      x = pixel_shuffle(conv(r * r * c, 3, f"layers_{2 * i}", self.dtype)(x), r)
    return x


class DRCT(nn.Module):
  """(B, H, W, C) low-resolution images in [0, 1] -> (B, H*upscale, W*upscale, C), any H and W.
  Returns `(image, features)`: features holds every group's output and the deep features after the
  final norm ('groups', 'deep'), at the low resolution, for analyses of the information flow."""
  embed_dim: int = 180
  num_groups: int = 6
  num_heads: Tuple[int, ...] = (6,) * 6  # per group
  window_size: int = 16
  mlp_ratio: float = 2.0
  growth: int = 32  # gc
  upscale: int = 4  # 2^n or 3
  img_range: float = 1.0
  mean: Tuple[float, ...] = RGB_MEAN  # () = zero mean (the official code uses zeros for non-RGB)
  in_chans: int = 3
  num_feat: int = 64  # the upsampler's width (fixed at 64 in the official code)
  drop_path_rate: float = 0.1
  dtype: Any = jnp.float32

  def check(self, x):
    check_image(x, "drct", 1, self.in_chans)
    if len(self.num_heads) != self.num_groups:
      raise UserError(f"drct: num_heads {tuple(self.num_heads)} needs one entry per group "
                      f"(num_groups {self.num_groups})")
    if self.upscale < 1 or self.upscale != 3 and self.upscale & (self.upscale - 1):
      raise UserError(f"drct: upscale must be a power of 2 or 3; got {self.upscale}")
    if self.mean and len(self.mean) != self.in_chans:
      raise UserError(f"drct: mean {tuple(self.mean)} needs one entry per channel ({self.in_chans})")

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    self.check(x)
    b, h, w, c = x.shape
    mean = jnp.asarray(self.mean or (0.0,) * c, self.dtype)
    x = (x.astype(self.dtype) - mean) * self.img_range
    win = self.window_size
    x = jnp.pad(x, ((0, 0), (0, -h % win), (0, -w % win), (0, 0)), mode="reflect")

    shallow = conv(self.embed_dim, 3, "conv_first", self.dtype)(x)
    y = PatchEmbed(self.dtype, name="patch_embed")(shallow)
    rates = drop_path_rates(self.drop_path_rate, (LAYERS_PER_GROUP + 1,) * self.num_groups)
    groups = [RDG(self.num_heads[g], win, self.mlp_ratio, self.growth, rates[g][0], self.dtype)
              for g in range(self.num_groups)]
    taps = tuple(range(self.num_groups))
    y, feats = Seq(groups, name="layers")(y, train=train, capture=taps)
    deep = layer_norm(self.dtype, "norm")(y)
    y = conv(self.embed_dim, 3, "conv_after_body", self.dtype)(deep) + shallow
    y = ConvLReLU(self.num_feat, self.dtype, name="conv_before_upsample")(y)
    y = conv(c, 3, "conv_last", self.dtype)(Upsample(self.upscale, self.dtype, name="upsample")(y))
    y = y[:, :h * self.upscale, :w * self.upscale] / self.img_range + mean
    return y, {"groups": [feats[g] for g in taps], "deep": deep}


class PatchEmbed(nn.Module):
  """The official `patch_embed` at patch size 1: only its LayerNorm."""
  dtype: Any

  @nn.compact
  def __call__(self, x):
    return layer_norm(self.dtype, "norm")(x)


# The paper's models (official options/train/*.yml): 180 channels, 6 heads, 16x16 windows, MLP ratio 2,
# gc 32; DRCT 6 groups (14.1M parameters at x4, the official README), DRCT-L 12 (27.6M).
VARIANTS = {
    "drct": dict(embed_dim=180, num_groups=6, num_heads=(6,) * 6),
    "drct_l": dict(embed_dim=180, num_groups=12, num_heads=(6,) * 12),
    # CPU size: 3 heads do not divide the dense widths 32, 40, 56: the layers get 3, 1, 2, 3, 1 heads.
    "drct_tiny": dict(embed_dim=24, num_groups=1, num_heads=(3,), growth=8, window_size=8, num_feat=16,
                      drop_path_rate=0.0),
}


def create_drct(variant: str, **kwargs) -> DRCT:
  """DRCT of a `VARIANTS` size; keyword arguments override its fields (upscale, img_range, mean...)."""
  if variant not in VARIANTS:
    raise UserError(f"unknown DRCT variant '{variant}' ({', '.join(VARIANTS)})")
  return DRCT(**{**VARIANTS[variant], **kwargs})


@register_model(tags=("super-resolution",))
def drct(**kwargs) -> DRCT:
  return create_drct("drct", **kwargs)


@register_model(tags=("super-resolution",))
def drct_l(**kwargs) -> DRCT:
  return create_drct("drct_l", **kwargs)


@register_model(tags=("super-resolution",))
def drct_tiny(**kwargs) -> DRCT:
  return create_drct("drct_tiny", **kwargs)
