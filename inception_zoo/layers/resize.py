"""Bilinear resizing of NHWC maps exactly as PyTorch's `F.interpolate(x, size, mode='bilinear', align_corners=...)`.

Segmentation heads resize logits and features with `align_corners=False` (torchvision, VainF's DeepLabV3+, mmseg)
or `align_corners=True` (the CPS / MGD code); parity with them needs PyTorch's sampling for both. Each axis is one
(out, in) matrix of linear-interpolation weights, built on the host from PyTorch's source-index rule
(`area_pixel_compute_source_index`): align_corners=False samples at (i + 0.5) * in / out - 0.5, clamped at 0;
align_corners=True at i * (in - 1) / (out - 1). The weights are computed in float32 as PyTorch's CPU kernel does,
and applied as two small matrix products, which also suits TPUs. No antialiasing (PyTorch's default): for
downsampling it is the two-tap interpolation, not an area filter. `jax.image.resize(..., 'bilinear')` agrees with
align_corners=False when upsampling, but has no align_corners=True.
"""
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError


def interpolation_matrix(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
  """(out_size, in_size) float32 weights of PyTorch's 1-D linear interpolation; each row sums to 1."""
  dst = np.arange(out_size, dtype=np.float32)
  if align_corners:
    scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0)
    src = dst * scale
  else:
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = np.clip(src - lo.astype(np.float32), 0, 1).astype(np.float32)
  weights = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(weights, (rows, lo), 1 - frac)
  np.add.at(weights, (rows, hi), frac)
  return weights


def resize_bilinear(x: jnp.ndarray, size: Tuple[int, int], align_corners: bool = False) -> jnp.ndarray:
  """(B, H, W, C) -> (B, size[0], size[1], C), PyTorch's bilinear `F.interpolate(x, size, align_corners=...)`."""
  if x.ndim != 4:
    raise UserError(f"resize_bilinear expects (batch, height, width, channels) maps; got shape {tuple(x.shape)}")
  (h, w), (out_h, out_w) = x.shape[1:3], (int(size[0]), int(size[1]))
  if out_h < 1 or out_w < 1:
    raise UserError(f"resize_bilinear needs a positive output size; got {size}")
  if (h, w) == (out_h, out_w):
    return x  # PyTorch's weights are the identity then, in both modes
  rows = jnp.asarray(interpolation_matrix(h, out_h, align_corners), x.dtype)
  cols = jnp.asarray(interpolation_matrix(w, out_w, align_corners), x.dtype)
  # HIGHEST: on TPUs the default precision would round the weights and maps to bfloat16.
  precision = jax.lax.Precision.HIGHEST
  x = jnp.einsum("oh,bhwc->bowc", rows, x, precision=precision)
  return jnp.einsum("pw,bowc->bopc", cols, x, precision=precision)
