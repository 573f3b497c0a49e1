"""Non-maximum suppression with static shapes: greedy NMS (torchvision.ops.nms / batched_nms) and Soft-NMS.

Outputs are `max_output` indices into the inputs plus a validity mask, never a data-dependent length.

`nms` is exact greedy NMS computed tile by tile, as TPU detectors do (TF `non_max_suppression_padded`): boxes
are sorted by score (stable, so ties keep the lower index first, like torchvision's CPU kernel), and each tile
of `tile_size` boxes (256 unless given, at most N) is first suppressed by the boxes already kept (at most
`max_output + tile_size` of them), then resolves suppression inside the tile by iterating "kept = alive and not
overlapped by an earlier kept box" to its fixed point (the greedy answer, reached in at most `tile_size`
rounds, usually a few). Memory is O(tile_size * (max_output + tile_size)) rather than the O(N^2) of a full IoU
matrix, the work is O(N * (max_output + tile_size)), and the loop over tiles stops once `max_output` boxes are
kept. A box is suppressed when IoU > iou_threshold, IoU computed as torchvision's kernel does.

`batched_nms` suppresses only within a class by masking the IoU with class equality: the per-class result that
torchvision's coordinate-offset trick emulates, without the float rounding of boxes shifted by large offsets.

`soft_nms` follows mmcv's `softnms_cpu` (Bodla et al. 2017): pick the highest current score, decay the others
by exp(-iou^2 / sigma) ('gaussian') or by (1 - iou) where iou >= iou_threshold ('linear'), drop those that fall
below score_threshold; it loops `max_output` times over all N boxes.
"""
from typing import Optional

import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError


def _overlaps(a, b, a_cls, b_cls, iou_threshold):
  """(Ta, Tb) bool: IoU(a_i, b_j) > iou_threshold and same class; the IoU arithmetic of torchvision's nms."""
  lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
  rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
  wh = jnp.maximum(rb - lt, 0)
  inter = wh[..., 0] * wh[..., 1]
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  iou = inter / (area_a[:, None] + area_b[None, :] - inter)
  return (iou > iou_threshold) & (a_cls[:, None] == b_cls[None, :])


def _greedy_nms(boxes, scores, classes, iou_threshold, max_output, valid, tile_size):
  boxes, scores, classes = jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes)
  n = boxes.shape[0]
  valid = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid)
  tile_size = min(tile_size, n)
  order = jnp.argsort(jnp.where(valid, -scores, jnp.inf), stable=True).astype(jnp.int32)
  num_tiles = -(-n // tile_size)
  pad = num_tiles * tile_size - n
  boxes = jnp.pad(boxes[order], ((0, pad), (0, 0)))
  classes = jnp.pad(classes[order], (0, pad))
  valid = jnp.pad(valid[order], (0, pad))

  # Kept boxes, compacted in score order; a tile appends at most tile_size of them at position `count`.
  capacity = max_output + tile_size
  kept_boxes = jnp.zeros((capacity, 4), boxes.dtype)
  kept_classes = jnp.zeros((capacity,), classes.dtype)
  kept_pos = jnp.zeros((capacity,), jnp.int32)
  earlier = jnp.arange(tile_size)[:, None] < jnp.arange(tile_size)[None, :]

  def tile_step(state):
    t, count, kept_boxes, kept_classes, kept_pos = state
    start = t * tile_size
    tb = jax.lax.dynamic_slice_in_dim(boxes, start, tile_size)
    tc = jax.lax.dynamic_slice_in_dim(classes, start, tile_size)
    alive = jax.lax.dynamic_slice_in_dim(valid, start, tile_size)
    by_kept = _overlaps(tb, kept_boxes, tc, kept_classes, iou_threshold) & (jnp.arange(capacity) < count)[None]
    alive = alive & ~jnp.any(by_kept, axis=1)
    within = _overlaps(tb, tb, tc, tc, iou_threshold) & earlier

    def refine(carry):
      keep, _ = carry
      new = alive & ~jnp.any(within & keep[:, None], axis=0)
      return new, jnp.any(new != keep)

    keep, _ = jax.lax.while_loop(lambda c: c[1], refine, (alive, jnp.array(True)))
    idx = jnp.nonzero(keep, size=tile_size, fill_value=0)[0]
    kept_boxes = jax.lax.dynamic_update_slice_in_dim(kept_boxes, tb[idx], count, 0)
    kept_classes = jax.lax.dynamic_update_slice_in_dim(kept_classes, tc[idx], count, 0)
    kept_pos = jax.lax.dynamic_update_slice_in_dim(kept_pos, (start + idx).astype(jnp.int32), count, 0)
    return t + 1, count + jnp.sum(keep), kept_boxes, kept_classes, kept_pos

  state = (0, jnp.int32(0), kept_boxes, kept_classes, kept_pos)
  _, count, _, _, kept_pos = jax.lax.while_loop(lambda s: (s[0] < num_tiles) & (s[1] < max_output), tile_step, state)
  keep_valid = jnp.arange(max_output) < count
  return jnp.where(keep_valid, order[kept_pos[:max_output]], 0), keep_valid


def nms(boxes, scores, iou_threshold: float, max_output: int, valid=None, *, tile_size: int = 256):
  """Greedy NMS: (indices (max_output,) int32 in decreasing score order, keep_valid (max_output,) bool).

  Entries past the number kept have index 0 and keep_valid False. `valid` (N,) bool excludes padding boxes.
  Equals torchvision.ops.nms(boxes, scores, iou_threshold)[:max_output].
  """
  return _greedy_nms(boxes, scores, jnp.zeros(scores.shape, jnp.int32), iou_threshold, max_output, valid,
                     tile_size)


def batched_nms(boxes, scores, classes, iou_threshold: float, max_output: int, valid=None, *, tile_size: int = 256):
  """Class-wise NMS (torchvision.ops.batched_nms): boxes only suppress boxes of the same class. As `nms`."""
  return _greedy_nms(boxes, scores, classes, iou_threshold, max_output, valid, tile_size)


def soft_nms(boxes, scores, iou_threshold: float, sigma: float = 0.5, score_threshold: float = 0.001,
             max_output: int = 100, method: str = "gaussian", valid: Optional[jax.Array] = None):
  """Soft-NMS as mmcv's soft_nms: (indices, new_scores, keep_valid), each (max_output,), in selection order.

  `new_scores` are the decayed scores at selection. Like mmcv, the first pick is the top box even when its score
  is below score_threshold; every later pick has a decayed score >= score_threshold.
  """
  if method not in ("gaussian", "linear"):
    raise UserError(f"soft_nms method must be 'gaussian' or 'linear', not {method!r}")
  boxes = jnp.asarray(boxes)
  alive = jnp.ones(boxes.shape[:1], bool) if valid is None else jnp.asarray(valid)
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

  def step(state, _):
    scores, alive = state
    i = jnp.argmax(jnp.where(alive, scores, -jnp.inf))
    picked, picked_score = jnp.any(alive), scores[i]
    lt = jnp.maximum(boxes[i, :2], boxes[:, :2])
    rb = jnp.minimum(boxes[i, 2:], boxes[:, 2:])
    wh = jnp.maximum(rb - lt, 0)
    inter = wh[:, 0] * wh[:, 1]
    iou = inter / (areas[i] + areas - inter)
    if method == "gaussian":
      weight = jnp.exp(-(iou * iou) / sigma)
    else:
      weight = jnp.where(iou >= iou_threshold, 1 - iou, 1.)
    alive = alive.at[i].set(False)
    decayed = jnp.where(alive, scores * weight, scores)
    alive = alive & (decayed >= score_threshold)
    return (decayed, alive), (i.astype(jnp.int32), picked_score, picked)

  _, (indices, new_scores, keep_valid) = jax.lax.scan(step, (jnp.asarray(scores), alive), None, length=max_output)
  return jnp.where(keep_valid, indices, 0), jnp.where(keep_valid, new_scores, 0), keep_valid
