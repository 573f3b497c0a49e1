"""Window attention's index arithmetic (Swin; DRCT's and Swin V2's blocks): windows, cyclic shifts,
relative positions. Plain NumPy / reshapes, computed at trace time from static sizes."""
import math
from typing import Tuple

import numpy as np


def window_and_shift(size: int, window: int, shifted: bool) -> Tuple[int, int]:
  """(window, shift) along one axis of a map of `size` tokens: a window no smaller than the map
  covers all of it and is not shifted (timm's rule); otherwise shifted blocks move by half a window."""
  if size <= window:
    return size, 0
  return window, window // 2 if shifted else 0


def relative_coords_table(window: Tuple[int, int], pretrained: Tuple[int, int]) -> np.ndarray:
  """Log-spaced relative coordinates (Eq. 4) of every offset in a window, shape (2wh-1, 2ww-1, 2).

  Offsets are scaled so that the largest one of the pre-training window (the window itself when
  `pretrained` is 0) is 8, then mapped to sign(d) log2(1 + |d|) / log2(8): [-1, 1] at that window,
  growing slowly beyond it, which is what lets the bias extrapolate to larger windows (Sec. 3.3)."""
  axes = []
  for w, p in zip(window, pretrained):
    d = np.arange(-(w - 1), w, dtype=np.float32)
    axes.append(d / max((p if p > 0 else w) - 1, 1) * 8)  # max(.., 1): a 1-token window has only 0
  table = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
  return np.sign(table) * np.log2(np.abs(table) + 1.0) / math.log2(8)


def relative_position_index(window: Tuple[int, int]) -> np.ndarray:
  """(N, N) row of `relative_coords_table` (flattened) for each pair of the N = wh*ww tokens."""
  wh, ww = window
  coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
  rel = coords[:, :, None] - coords[:, None, :]
  return (rel[0] + wh - 1) * (2 * ww - 1) + rel[1] + ww - 1


def window_partition(x, window: Tuple[int, int]):
  """(B, H, W, C) -> (B, windows, wh*ww, C), windows in row-major order."""
  b, h, w, c = x.shape
  wh, ww = window
  x = x.reshape(b, h // wh, wh, w // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // wh) * (w // ww), wh * ww, c)


def window_reverse(x, window: Tuple[int, int], size: Tuple[int, int]):
  """Inverse of `window_partition` for a map of `size` = (H, W)."""
  b, _, _, c = x.shape
  (wh, ww), (h, w) = window, size
  x = x.reshape(b, h // wh, w // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h, w, c)


def shift_mask(size: Tuple[int, int], window: Tuple[int, int], shift: Tuple[int, int]) -> np.ndarray:
  """(windows, N, N) additive mask of a cyclically shifted (padded) map of `size`: -100 between
  tokens that the shift brought together from different regions, 0 elsewhere (Swin V1, Sec. 3.2)."""
  regions = np.zeros(size, np.float32)
  (wh, ww), (sh, sw) = window, shift
  # The same slices as timm, so a zero shift along one axis gives the same regions too.
  for i, rows in enumerate((slice(0, -wh), slice(-wh, -sh), slice(-sh, None))):
    for j, cols in enumerate((slice(0, -ww), slice(-ww, -sw), slice(-sw, None))):
      regions[rows, cols] = 3 * i + j
  r = window_partition(regions[None, :, :, None], window)[0, :, :, 0]
  return np.where(r[:, None, :] != r[:, :, None], -100.0, 0.0).astype(np.float32)
