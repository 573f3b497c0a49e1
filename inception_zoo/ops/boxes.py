"""Box arithmetic for detectors: IoU, the R-CNN box coder, anchors, matching, sampling and FPN level rules.

Semantics follow torchvision (`ops/boxes.py`, `models/detection/_utils.py` (BoxCoder, Matcher,
BalancedPositiveNegativeSampler), `models/detection/anchor_utils.py` (AnchorGenerator) and `ops/poolers.py`
(LevelMapper)) and mmdet's `SingleRoIExtractor.map_roi_levels`. Boxes are (x1, y1, x2, y2) floats in pixels;
widths are x2 - x1 (no +1). Everything is jit-compatible with static shapes: where torchvision returns a
variable number of elements (matches, samples) these return fixed-size arrays and boolean masks.
"""
import math
from typing import Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

# torchvision BoxCoder's default bbox_xform_clip: dw, dh above it would blow a box up more than 1000 / 16 times.
BBOX_XFORM_CLIP = math.log(1000. / 16)


def box_area(boxes):
  """(..., 4) -> (...,): (x2 - x1) * (y2 - y1)."""
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a, b):
  """(N, 4), (M, 4) -> (N, M) IoU, as torchvision.ops.box_iou (0 / 0 gives NaN there and here)."""
  lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
  rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
  wh = jnp.maximum(rb - lt, 0)
  inter = wh[..., 0] * wh[..., 1]
  return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter)


def encode_boxes(reference, proposals, weights=(1., 1., 1., 1.)):
  """Regression targets (dx, dy, dw, dh) of `reference` boxes relative to `proposals`, both (..., 4).

  torchvision `BoxCoder(weights).encode_single(reference, proposals)`, same arithmetic order.
  """
  wx, wy, ww, wh = weights
  ex_w = proposals[..., 2] - proposals[..., 0]
  ex_h = proposals[..., 3] - proposals[..., 1]
  ex_cx = proposals[..., 0] + 0.5 * ex_w
  ex_cy = proposals[..., 1] + 0.5 * ex_h
  gt_w = reference[..., 2] - reference[..., 0]
  gt_h = reference[..., 3] - reference[..., 1]
  gt_cx = reference[..., 0] + 0.5 * gt_w
  gt_cy = reference[..., 1] + 0.5 * gt_h
  return jnp.stack([wx * (gt_cx - ex_cx) / ex_w, wy * (gt_cy - ex_cy) / ex_h,
                    ww * jnp.log(gt_w / ex_w), wh * jnp.log(gt_h / ex_h)], axis=-1)


def decode_boxes(deltas, boxes, weights=(1., 1., 1., 1.), clip=BBOX_XFORM_CLIP):
  """Boxes from regression `deltas` applied to `boxes` (both (..., 4), broadcastable).

  torchvision `BoxCoder(weights, clip).decode_single`: dw, dh are clamped at `clip` before exp, and the
  corners are centre -/+ 0.5 * size in that order, so results agree with it to float rounding.
  """
  boxes = boxes.astype(deltas.dtype)
  wx, wy, ww, wh = weights
  widths = boxes[..., 2] - boxes[..., 0]
  heights = boxes[..., 3] - boxes[..., 1]
  ctr_x = boxes[..., 0] + 0.5 * widths
  ctr_y = boxes[..., 1] + 0.5 * heights
  dx = deltas[..., 0] / wx
  dy = deltas[..., 1] / wy
  dw = jnp.minimum(deltas[..., 2] / ww, clip)
  dh = jnp.minimum(deltas[..., 3] / wh, clip)
  pred_ctr_x = dx * widths + ctr_x
  pred_ctr_y = dy * heights + ctr_y
  half_w = 0.5 * (jnp.exp(dw) * widths)
  half_h = 0.5 * (jnp.exp(dh) * heights)
  return jnp.stack([pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h], axis=-1)


def clip_boxes(boxes, height, width):
  """torchvision.ops.clip_boxes_to_image: x into [0, width], y into [0, height] (either may be traced)."""
  x = jnp.clip(boxes[..., 0::2], 0, width)
  y = jnp.clip(boxes[..., 1::2], 0, height)
  return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def small_boxes_mask(boxes, min_size):
  """True for the boxes torchvision.ops.remove_small_boxes keeps: width and height both >= min_size."""
  return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def anchors(feature_shape: Tuple[int, int], stride: Union[int, Tuple[int, int]], sizes: Sequence[float],
            aspect_ratios: Sequence[float]):
  """The (H * W * A, 4) anchors of one feature level, exactly torchvision's AnchorGenerator.

  Location-major (row y, then column x, then the A = len(aspect_ratios) * len(sizes) cell anchors, ratio-major
  as torchvision's `generate_anchors`); aspect ratio is height / width; cell anchors are rounded half-to-even
  like `torch.round`. Computed in numpy (all inputs are static) and returned as a constant.
  """
  sy, sx = (stride, stride) if np.ndim(stride) == 0 else stride
  scales = np.asarray(sizes, np.float32)
  h_ratios = np.sqrt(np.asarray(aspect_ratios, np.float32))
  w_ratios = np.float32(1) / h_ratios
  ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
  hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
  cell = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2))
  shift_y, shift_x = np.meshgrid(np.arange(feature_shape[0]) * sy, np.arange(feature_shape[1]) * sx, indexing="ij")
  shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4).astype(np.float32)
  return jnp.asarray((shifts + cell[None]).reshape(-1, 4))


def match(iou, gt_valid, high: float, low: float, allow_low_quality: bool):
  """torchvision `det_utils.Matcher` on a (G, N) quality matrix: (N,) int32 matched gt index per column.

  -1 below `low`, -2 in [low, high). With `allow_low_quality`, for each gt the columns with its highest quality
  (ties included) get their best gt back even below the thresholds. Padding gts (`gt_valid` False) never match;
  with no valid gt every column is -1. Among gts tied for a column the lowest index wins.
  """
  quality = jnp.where(gt_valid[:, None], iou, -jnp.inf)
  best = jnp.max(quality, axis=0)
  all_matches = jnp.argmax(quality, axis=0).astype(jnp.int32)
  matches = jnp.where(best < low, -1, jnp.where(best < high, -2, all_matches))
  if allow_low_quality:
    highest_per_gt = jnp.max(quality, axis=1, keepdims=True)
    is_best = jnp.any((quality == highest_per_gt) & gt_valid[:, None], axis=0)
    matches = jnp.where(is_best, all_matches, matches)
  return matches.astype(jnp.int32)


def _random_subset(candidates, count, max_count: int, key):
  """A uniformly random subset of `count` (traced, <= max_count) of the True entries of `candidates`."""
  k = min(max_count, candidates.shape[0])
  if k == 0:
    return jnp.zeros_like(candidates)
  priority = jnp.where(candidates, jax.random.uniform(key, candidates.shape), -1.)
  # top_k indices are distinct even when priorities tie, so exactly `count` entries are picked.
  _, idx = jax.lax.top_k(priority, k)
  return jnp.zeros_like(candidates).at[idx].set(jnp.arange(k) < count)


def sample_balanced(labels, key, num_samples: int, positive_fraction: float):
  """torchvision BalancedPositiveNegativeSampler for one image with static shapes: (pos_mask, neg_mask).

  `labels` (N,) int: >= 1 positive, 0 negative, -1 ignored. At most int(num_samples * positive_fraction)
  positives are drawn uniformly at random, and negatives fill the rest up to num_samples.
  """
  positive = labels >= 1
  negative = labels == 0
  max_pos = int(num_samples * positive_fraction)
  num_pos = jnp.minimum(jnp.sum(positive), max_pos)
  num_neg = jnp.minimum(jnp.sum(negative), num_samples - num_pos)
  key_pos, key_neg = jax.random.split(key)
  return (_random_subset(positive, num_pos, max_pos, key_pos),
          _random_subset(negative, num_neg, num_samples, key_neg))


def level_for_boxes(boxes, k_min: int, k_max: int, canonical_scale=224, canonical_level=4, eps=1e-6):
  """FPN level k in [k_min, k_max] of each box (torchvision LevelMapper, FPN paper eq. 1), as int32.

  torchvision returns k - k_min; this returns k itself.
  """
  s = jnp.sqrt(box_area(boxes))
  level = jnp.floor(canonical_level + jnp.log2(s / canonical_scale) + eps)
  return jnp.clip(level, k_min, k_max).astype(jnp.int32)


def mmdet_level_for_boxes(boxes, num_levels: int, finest_scale=56):
  """mmdet SingleRoIExtractor.map_roi_levels: floor(log2(sqrt(w h) / finest_scale + 1e-6)) in [0, num_levels)."""
  scale = jnp.sqrt((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))
  level = jnp.floor(jnp.log2(scale / finest_scale + 1e-6))
  return jnp.clip(level, 0, num_levels - 1).astype(jnp.int32)
