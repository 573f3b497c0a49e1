"""Instance-mask plumbing for Mask R-CNN: box crops on the host, mask targets and pasting back, in jax.

Rather than carrying full-image masks (an image with 1000 instances would not fit a batch), the input pipeline
keeps each instance's mask cropped to its box at a fixed `size` (`crop_masks`, numpy, as TPU Mask R-CNN does).
`mask_targets` then RoIAligns each proposal on its matched gt's crop, which reproduces torchvision's
`project_masks_on_boxes` (RoIAlign on the full mask, `models/detection/roi_heads.py`) up to the crop's
resolution. `paste_masks` is torchvision's `paste_masks_in_image` (same file) with static shapes.
"""
import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.ops.roi_align import roi_align


def _resample_matrix(start: float, length: float, out_size: int, in_size: int):
  """(first, weights (out_size, n)): output o averages ceil(length / out_size) bilinear samples taken at
  pixel-centre positions of its 1 / out_size share of [start, start + length], reading input `first + t`."""
  k = max(int(np.ceil(length / out_size)), 1)
  pos = start - 0.5 + (np.arange(out_size)[:, None] + (np.arange(k)[None] + 0.5) / k) * (length / out_size)
  inside = (pos >= -1) & (pos <= in_size)  # torchvision roi_align's rule: beyond one pixel out reads zero
  pos = np.clip(pos, 0, in_size - 1)
  low = np.floor(pos).astype(np.int64)
  high = np.minimum(low + 1, in_size - 1)
  frac = pos - low
  first = int(low.min())
  weights = np.zeros((out_size, int(high.max()) - first + 1), np.float64)
  rows = np.broadcast_to(np.arange(out_size)[:, None], pos.shape)
  np.add.at(weights, (rows, low - first), (1 - frac) * inside / k)
  np.add.at(weights, (rows, high - first), frac * inside / k)
  return first, weights


def crop_masks(masks: np.ndarray, boxes: np.ndarray, size: int = 112) -> np.ndarray:
  """Host-side: (N, H, W) binary masks cropped to their (N, 4) boxes and resized to (N, size, size) float32.

  Each output pixel averages ceil(box_side / size) x ceil(box_side / size) bilinear samples of the mask at
  pixel centres (RoIAlign with aligned=True and adaptive sampling): shrinking averages whole pixels, enlarging
  interpolates, blurring the mask's edge over one input pixel. Only what lies inside the box is kept, so where
  the mask touches the box's border about a quarter pixel of area per pixel of border is lost (a few pixels
  for a tight box around a ~100 px blob).
  """
  out = np.zeros((len(masks), size, size), np.float32)
  for n, (mask, (x1, y1, x2, y2)) in enumerate(zip(masks, np.asarray(boxes, np.float64))):
    y0, wy = _resample_matrix(y1, y2 - y1, size, mask.shape[0])
    x0, wx = _resample_matrix(x1, x2 - x1, size, mask.shape[1])
    window = np.asarray(mask[y0:y0 + wy.shape[1], x0:x0 + wx.shape[1]], np.float64)
    out[n] = wy @ window @ wx.T
  return out


def mask_targets(crops, gt_boxes, matched, proposals, size: int = 28, *, aligned: bool = False,
                 max_sampling: int = 8):
  """(R, size, size) Mask R-CNN targets: proposal r's view of gt `matched[r]`'s mask from its (G, S, S) crop.

  The proposal is mapped into the crop's frame ((x - box x1) * S / box width, likewise y) and RoIAligned there
  with adaptive sampling (ceil(crop pixels / size) per bin, capped at `max_sampling`). aligned=False reproduces
  torchvision's project_masks_on_boxes (legacy RoIAlign reading pixel k at coordinate k: a half-pixel shift);
  aligned=True samples pixel centres like Detectron2's targets.
  """
  s_h, s_w = crops.shape[1], crops.shape[2]
  proposals = jnp.asarray(proposals)
  g = jnp.asarray(gt_boxes)[matched]
  shift = 0. if aligned else 0.5
  # the floor keeps targets finite for empty (padding) gt boxes, which callers mask out
  sx = s_w / jnp.maximum(g[:, 2] - g[:, 0], 1e-3)
  sy = s_h / jnp.maximum(g[:, 3] - g[:, 1], 1e-3)
  rois = jnp.stack([(proposals[:, 0] + shift - g[:, 0]) * sx, (proposals[:, 1] + shift - g[:, 1]) * sy,
                    (proposals[:, 2] + shift - g[:, 0]) * sx, (proposals[:, 3] + shift - g[:, 1]) * sy], axis=-1)
  return roi_align(crops[..., None], rois, matched, (size, size), 1., 0, True, max_sampling)[..., 0]


def _paste_matrix(lo, hi, in_size: int, out_size: int):
  """(N, out_size, in_size) bilinear weights (F.interpolate, align_corners=False) of the mask resized to the
  integer extent [lo, hi] and placed there; zero outside it."""
  length = jnp.maximum(hi - lo + 1, 1)
  dst = jnp.arange(out_size)[None] - lo[:, None]
  inside = (dst >= 0) & (dst <= (hi - lo)[:, None])
  ratio = (jnp.float32(in_size) / length.astype(jnp.float32))[:, None]
  src = jnp.maximum((dst.astype(jnp.float32) + 0.5) * ratio - 0.5, 0)
  i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), in_size - 1)
  i1 = jnp.where(i0 < in_size - 1, i0 + 1, i0)
  l1 = jnp.clip(src - i0, 0, 1)
  weights = jax.nn.one_hot(i0, in_size) * (1 - l1)[..., None] + jax.nn.one_hot(i1, in_size) * l1[..., None]
  return jnp.where(inside[..., None], weights, 0)


def paste_masks(masks, boxes, height: int, width: int, padding: int = 1):
  """torchvision paste_masks_in_image: (N, h, w) mask probabilities into (N, height, width) images.

  As torchvision: the mask is zero-padded by `padding`, its box enlarged by (w + 2 padding) / w and truncated
  to integers, the mask bilinearly resized to the integer box's size and placed, clipped to the image. The
  resize and placement are per-axis weight matrices (two small matmuls per mask), so shapes are static.
  """
  m = masks.shape[-1]
  padded = jnp.pad(masks.astype(jnp.float32), ((0, 0), (padding, padding), (padding, padding)))
  scale = jnp.float32((m + 2 * padding) / m)
  boxes = boxes.astype(jnp.float32)
  w_half = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
  h_half = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
  x_c = (boxes[:, 2] + boxes[:, 0]) * 0.5
  y_c = (boxes[:, 3] + boxes[:, 1]) * 0.5
  # float -> int truncates toward zero, like torchvision's .to(torch.int64)
  x0, x1 = (x_c - w_half).astype(jnp.int32), (x_c + w_half).astype(jnp.int32)
  y0, y1 = (y_c - h_half).astype(jnp.int32), (y_c + h_half).astype(jnp.int32)
  wy = _paste_matrix(y0, y1, padded.shape[1], height)
  wx = _paste_matrix(x0, x1, padded.shape[2], width)
  return jnp.einsum("nym,nmk,nxk->nyx", wy, padded, wx, precision=jax.lax.Precision.HIGHEST)
