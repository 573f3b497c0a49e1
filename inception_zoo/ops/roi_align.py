"""RoIAlign on NHWC features, single level and FPN multi-level, with torchvision.ops.roi_align's semantics.

Follows torchvision's CPU kernel (`csrc/ops/cpu/roi_align_kernel.cpp`): the `aligned` half-pixel offset, RoI
width/height at least 1 when not aligned, `sampling_ratio` x `sampling_ratio` bilinear samples per bin
averaged, samples with y < -1, y > H, x < -1 or x > W read as zero and others clamped into the map.

`sampling_ratio <= 0` asks for torchvision's adaptive ceil(roi_size / output_size) samples per bin, a
data-dependent count: here every bin evaluates a static `max_sampling` x `max_sampling` grid and the samples past
the RoI's own count get weight 0, so results equal torchvision's whenever the adaptive count is <= max_sampling;
RoIs that would need more are averaged on a max_sampling-point grid spread over the bin instead.

The samples are visited one grid position at a time (a loop of s * s steps, s the grid side; in adaptive mode
the positions no RoI needs are skipped), each step gathering the 4 bilinear neighbours of one sample per bin
from the flattened features, so memory is O(R * h * w * C) whatever s is; gradients w.r.t. the features are
the gathers' scatter-adds.
`multiscale_roi_align` gathers every RoI from its own level of one concatenated feature table, so it costs one
single-level RoIAlign, not one per level.
"""
from typing import Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np


def _axis_weights(coord, size):
  """torchvision's bilinear rules along one axis: (low, high) indices and their weights for coordinates."""
  empty = (coord < -1) | (coord > size)
  coord = jnp.clip(coord, 0, size)  # beyond `size` the sample is empty anyway; clipping keeps indices in range
  low = jnp.floor(coord).astype(jnp.int32)
  at_end = low >= size - 1
  low = jnp.where(at_end, size - 1, low)
  high = jnp.where(at_end, size - 1, low + 1)
  frac = jnp.where(at_end, 0, coord - low)
  return low, high, jnp.where(empty, 0, 1 - frac), jnp.where(empty, 0, frac)


def _roi_align_table(table, base, height, width, scale, boxes, output_size, sampling_ratio, aligned, max_sampling):
  """RoIAlign where RoI r reads the (height[r], width[r], C) map stored from row base[r] of `table`."""
  ph, pw = output_size
  table = jnp.asarray(table)
  dtype = jnp.promote_types(table.dtype, jnp.float32)
  boxes = jnp.asarray(boxes, dtype)
  offset = 0.5 if aligned else 0.
  x1 = boxes[:, 0] * scale - offset
  y1 = boxes[:, 1] * scale - offset
  roi_w = boxes[:, 2] * scale - offset - x1
  roi_h = boxes[:, 3] * scale - offset - y1
  if not aligned:
    roi_w = jnp.maximum(roi_w, 1.)
    roi_h = jnp.maximum(roi_h, 1.)
  bin_h = (roi_h / ph)[:, None]
  bin_w = (roi_w / pw)[:, None]
  if sampling_ratio > 0:
    side = sampling_ratio
    grid_h = grid_w = jnp.full(boxes.shape[:1], sampling_ratio, dtype)
  else:
    side = max_sampling
    grid_h = jnp.clip(jnp.ceil(roi_h / ph), 0, max_sampling)
    grid_w = jnp.clip(jnp.ceil(roi_w / pw), 0, max_sampling)
  count = jnp.maximum(grid_h * grid_w, 1)[:, None, None, None]
  # An aligned RoI of size <= 0 has no samples (output 0); a divisor of 1 keeps its unused coordinates finite.
  div_h = jnp.maximum(grid_h, 1)[:, None]
  div_w = jnp.maximum(grid_w, 1)[:, None]
  height, width = height[:, None], width[:, None]

  def add_sample(k, acc):
    i, j = k // side, k % side
    y = y1[:, None] + jnp.arange(ph, dtype=dtype)[None] * bin_h + (i + 0.5) * bin_h / div_h
    x = x1[:, None] + jnp.arange(pw, dtype=dtype)[None] * bin_w + (j + 0.5) * bin_w / div_w
    y_lo, y_hi, wy_lo, wy_hi = _axis_weights(y, height)
    x_lo, x_hi, wx_lo, wx_hi = _axis_weights(x, width)
    in_grid_y = (i < grid_h)[:, None]
    in_grid_x = (j < grid_w)[:, None]
    wy_lo, wy_hi = jnp.where(in_grid_y, wy_lo, 0), jnp.where(in_grid_y, wy_hi, 0)
    wx_lo, wx_hi = jnp.where(in_grid_x, wx_lo, 0), jnp.where(in_grid_x, wx_hi, 0)
    for rows, wy in ((base[:, None] + y_lo * width, wy_lo), (base[:, None] + y_hi * width, wy_hi)):
      for cols, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
        values = table[rows[:, :, None] + cols[:, None, :]].astype(dtype)
        acc = acc + (wy[:, :, None] * wx[:, None, :])[..., None] * values
    return acc

  step = add_sample
  if sampling_ratio <= 0:
    # Grid positions that no RoI needs are skipped (a no-op branch, not a data-dependent trip count, so the loop
    # stays reverse-differentiable).
    need_h, need_w = jnp.max(grid_h), jnp.max(grid_w)
    step = lambda k, acc: jax.lax.cond((k // side < need_h) & (k % side < need_w), add_sample,
                                       lambda _, acc: acc, k, acc)
  acc = jnp.zeros((boxes.shape[0], ph, pw, table.shape[-1]), dtype)
  return (jax.lax.fori_loop(0, side * side, step, acc) / count).astype(table.dtype)


def _pair(size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


def roi_align(features, boxes, batch_index, output_size, spatial_scale, sampling_ratio, aligned, max_sampling=8):
  """torchvision.ops.roi_align on NHWC `features` (B, H, W, C): (R, h, w, C) for `boxes` (R, 4) of images
  `batch_index` (R,). `sampling_ratio <= 0` is adaptive, exact up to `max_sampling` samples per bin side."""
  _, h, w, c = features.shape
  r = boxes.shape[0]
  return _roi_align_table(features.reshape(-1, c), batch_index.astype(jnp.int32) * (h * w),
                          jnp.full((r,), h, jnp.int32), jnp.full((r,), w, jnp.int32), spatial_scale, boxes,
                          _pair(output_size), sampling_ratio, aligned, max_sampling)


def multiscale_roi_align(features: Sequence, boxes, batch_index, output_size, *, scales: Sequence[float],
                         sampling_ratio: int, aligned: bool, levels, max_sampling: int = 8):
  """RoIAlign of each RoI on its level `levels[r]` (index into `features`, a list of (B, H_l, W_l, C) maps).

  With `levels = level_for_boxes(boxes, k_min, k_max) - k_min` and `scales = infer_scales(...)` this is
  torchvision.ops.MultiScaleRoIAlign (which uses aligned=False).
  """
  c = features[0].shape[-1]
  sizes = [f.shape[1] * f.shape[2] for f in features]
  starts = jnp.asarray(np.cumsum([0] + [f.shape[0] * s for f, s in zip(features, sizes[:-1])]), jnp.int32)
  table = jnp.concatenate([f.reshape(-1, c) for f in features])
  height = jnp.asarray([f.shape[1] for f in features], jnp.int32)[levels]
  width = jnp.asarray([f.shape[2] for f in features], jnp.int32)[levels]
  scale = jnp.asarray(scales, jnp.float32)[levels]
  base = starts[levels] + batch_index.astype(jnp.int32) * height * width
  return _roi_align_table(table, base, height, width, scale, boxes, _pair(output_size), sampling_ratio, aligned,
                          max_sampling)


def infer_scales(feature_shapes: Sequence[Sequence[int]], image_shape: Sequence[int]):
  """torchvision MultiScaleRoIAlign's scales: 2 ** round(log2(feature_height / image_height)) per level.

  Each feature shape is a level's (H, W) or its NHWC shape (B, H, W, C); `image_shape` is (H, W) of the padded
  batch. Like torchvision, only the heights are used.
  """
  scales = []
  for shape in feature_shapes:
    h = shape[1] if len(shape) == 4 else shape[0]
    scales.append(float(2 ** np.round(np.log2(np.float32(float(h) / float(image_shape[0]))))))
  return scales
