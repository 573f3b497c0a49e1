"""Semantic segmentation evaluation: mmseg's metrics and its test-time inference.

- `ConfusionMatrix`: mmseg's IoUMetric over a whole dataset (intersections and unions summed over every
  image, not per-image means); pixels labelled `ignore` are left out. A class absent from both the labels and
  the predictions has IoU NaN and stays out of mIoU (mmseg's nanmean; torchmetrics' JaccardIndex with
  average='macro' leaves it out too, but its per-class values ('none') give it 0). Values are fractions
  (mmseg prints percentages).
- `sliding_window`: mmseg's slide_inference (EncoderDecoder) with fixed-size windows, so that a jitted model
  compiles once; `multi_scale_flip`: mmseg's multi-scale + flip test (SegTTAModel); `predict`: logits on a
  padded canvas -> class maps at the source images' sizes.

Logits are NHWC. Resizes are PyTorch's F.interpolate(mode='bilinear', align_corners=False), which mmseg
uses: half-pixel centres, two taps, no antialiasing, also when shrinking. jax.image.resize's 'bilinear'
with antialias=False gives the same, up and down (both to 1e-5 in tests/unit/test_segmentation_eval.py),
but here the two taps are written as (out, in) matrices built on the host, which compile several times
faster for each new size (evaluation meets many) and let `predict` pad sizes to a few buckets.
"""
import functools
from typing import Callable, Dict, List, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError

IGNORE = 255


def _pair(x, name: str) -> Tuple[int, int]:
  pair = (x, x) if isinstance(x, int) else tuple(x)
  if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in pair):
    raise UserError(f"{name} must be a positive int or (h, w) pair; got {x}")
  return int(pair[0]), int(pair[1])


class ConfusionMatrix:
  """Counts (label, prediction) pixel pairs over a dataset: `matrix[label, pred]`, int64. With several hosts,
  `merge_processes` before `compute`."""

  def __init__(self, num_classes: int, ignore: int = IGNORE):
    if num_classes < 1:
      raise UserError(f"ConfusionMatrix needs num_classes >= 1; got {num_classes}")
    self.num_classes, self.ignore = num_classes, ignore
    self.matrix = np.zeros((num_classes, num_classes), np.int64)

  def update(self, pred, label):
    """Adds the pixels of `pred` and `label`, integer arrays of one shape (one image or a batch)."""
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
      raise UserError(f"ConfusionMatrix.update: prediction of shape {pred.shape} for a label of shape {label.shape}")
    keep = label != self.ignore
    p, t = pred[keep].astype(np.int64), label[keep].astype(np.int64)
    k = self.num_classes
    for name, x in (("label", t), ("prediction", p)):
      if x.size and (x.min() < 0 or x.max() >= k):
        bad = x[(x < 0) | (x >= k)][0]
        raise UserError(f"ConfusionMatrix.update: {name} value {bad} is not a class id 0..{k - 1}"
                        f"{f' nor the ignore index {self.ignore}' if name == 'label' else ''}")
    self.matrix += np.bincount(t * k + p, minlength=k * k).reshape(k, k)

  def merge(self, other: "ConfusionMatrix"):
    self.matrix += other.matrix

  def merge_processes(self):
    """Sums the matrices of all JAX processes (each evaluated its share of the images) into every process."""
    if jax.process_count() == 1:
      return
    from jax.experimental import multihost_utils
    # Device arrays are 32-bit: send each count as two 31-bit halves, add them up in int64 here.
    halves = np.stack([self.matrix & (2 ** 31 - 1), self.matrix >> 31]).astype(np.int32)
    gathered = np.asarray(multihost_utils.process_allgather(halves)).astype(np.int64).sum(0)
    self.matrix = gathered[0] + (gathered[1] << 31)

  def compute(self) -> Dict[str, Union[float, np.ndarray]]:
    """mIoU, aAcc (pixel accuracy), mAcc (mean class accuracy) and per-class IoU and Acc (NaN: undefined)."""
    m = self.matrix.astype(np.float64)
    tp, labelled, predicted = np.diag(m), m.sum(1), m.sum(0)
    union = labelled + predicted - tp
    with np.errstate(invalid="ignore", divide="ignore"):
      iou = np.where(union > 0, tp / union, np.nan)
      acc = np.where(labelled > 0, tp / labelled, np.nan)
    total = labelled.sum()

    def nanmean(x):
      return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")

    return {"mIoU": nanmean(iou), "aAcc": float(tp.sum() / total) if total else float("nan"),
            "mAcc": nanmean(acc), "IoU": iou, "Acc": acc}


@functools.lru_cache(maxsize=64)
def _interp_matrix(n_in: int, n_out: int, pad_in: int, pad_out: int) -> np.ndarray:
  """(pad_out, pad_in) weights of PyTorch's linear interpolation (align_corners=False) of n_in samples to
  n_out; rows and columns past those are 0 (padding in, padding out)."""
  src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0)
  i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
  frac = (src - i0).astype(np.float32)
  m = np.zeros((pad_out, pad_in), np.float32)
  np.add.at(m, (np.arange(n_out), i0), 1 - frac)
  np.add.at(m, (np.arange(n_out), np.minimum(i0 + 1, n_in - 1)), frac)
  return m


@jax.jit
def _interpolate(x, rows, cols):
  # HIGHEST: GPUs would otherwise multiply float32 in TF32 (10-bit mantissas).
  return jnp.einsum("oh,nhwk,pw->nopk", rows, x.astype(jnp.float32), cols, precision=jax.lax.Precision.HIGHEST)


def resize_logits(logits, size) -> jax.Array:
  """(N, H, W, K) -> (N, h, w, K) float32, PyTorch's bilinear resize with align_corners=False."""
  h, w = _pair(size, "size")
  n, ih, iw, _ = logits.shape
  if (ih, iw) == (h, w):
    return jnp.asarray(logits)
  return _interpolate(logits, _interp_matrix(ih, h, ih, h), _interp_matrix(iw, w, iw, w))


def window_grid(h: int, w: int, crop, stride) -> List[Tuple[int, int, int, int]]:
  """mmseg's slide_inference windows (y1, y2, x1, x2) on an (h, w) image at least crop-sized: a grid of
  max(ceil((h - crop_h) / stride_h), 0) + 1 rows (columns alike) whose last window ends at the border."""
  (ch, cw), (sh, sw) = _pair(crop, "crop"), _pair(stride, "stride")
  rows, cols = max(h - ch + sh - 1, 0) // sh + 1, max(w - cw + sw - 1, 0) // sw + 1
  windows = []
  for i in range(rows):
    for j in range(cols):
      y2, x2 = min(i * sh + ch, h), min(j * sw + cw, w)
      windows.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
  return windows


# The helpers below are jitted with the window's offsets as traced arguments: eager slicing at static
# offsets would compile one program per window position (and per image size, in predict).


@functools.partial(jax.jit, static_argnums=3)
def _window(image, y, x, size):
  return jax.lax.dynamic_slice(image, (0, y, x, 0), (image.shape[0], *size, image.shape[3]))


@functools.partial(jax.jit, donate_argnums=0)
def _add_window(total, logits, y, x):
  # In place on the device (donated): an eager .at[].add would copy the whole canvas for every window.
  window = jax.lax.dynamic_slice(total, (0, y, x, 0), logits.shape)
  return jax.lax.dynamic_update_slice(total, window + logits.astype(total.dtype), (0, y, x, 0))


@jax.jit
def _resized_argmax(logits, rows, cols):
  return jnp.argmax(_interpolate(logits[None], rows, cols)[0], -1).astype(jnp.int32)


PREDICT_BUCKET = 128  # predict's output sizes round up to multiples of this: a few programs for all sizes


def _mirror(x, mirrored):
  # A traced flag: one program serves both the view and its mirror image.
  return jax.lax.cond(mirrored, lambda v: v[:, :, ::-1], lambda v: v, x)


@functools.partial(jax.jit, static_argnums=1)
def _view(image, size, mirrored):
  return _mirror(resize_logits(image, size), mirrored)


@functools.partial(jax.jit, static_argnums=1)
def _view_probs(logits, size, mirrored):
  return jax.nn.softmax(resize_logits(_mirror(logits, mirrored), size).astype(jnp.float32), axis=-1)


def sliding_window(apply_fn: Callable, image, num_classes: int, crop, stride) -> jax.Array:
  """mmseg's slide_inference: logits (N, H, W, num_classes) of images (N, H, W, C) of one size, the mean of
  `apply_fn` over overlapping crop-sized windows (see `window_grid`).

  `apply_fn` maps a (N, crop_h, crop_w, C) float batch to (N, h', w', num_classes) logits; lower-resolution
  logits are resized to the crop bilinearly (mmseg's encode_decode). An image smaller than the crop is
  padded to it with 0 (the mean colour after `normalize`) and the logits cropped back; mmseg instead runs the
  model on the smaller image, which would compile another shape. To match mmseg on a `seg_pad` canvas,
  pass the content image[:, :h, :w] of one image at a time.
  """
  image = jnp.asarray(image)
  if image.ndim != 4:
    raise UserError(f"sliding_window needs images (N, H, W, C); got shape {image.shape}")
  n, h, w, _ = image.shape
  ch, cw = _pair(crop, "crop")
  ph, pw = max(h, ch), max(w, cw)
  if (ph, pw) != (h, w):
    image = jnp.pad(image, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)))
  total = jnp.zeros((n, ph, pw, num_classes), jnp.float32)
  count = np.zeros((ph, pw), np.float32)
  for y1, y2, x1, x2 in window_grid(ph, pw, crop, stride):
    logits = apply_fn(_window(image, y1, x1, (ch, cw)))
    if logits.ndim != 4 or logits.shape[0] != n or logits.shape[-1] != num_classes:
      raise UserError(f"sliding_window: apply_fn gave logits of shape {logits.shape} for a window batch "
                      f"{(n, ch, cw)}; expected (N, h, w, {num_classes})")
    total = _add_window(total, resize_logits(logits, (ch, cw)), y1, x1)
    count[y1:y2, x1:x2] += 1
  return (total / count[None, :, :, None])[:, :h, :w]


def predict(logits, image_size, orig_size) -> Union[np.ndarray, List[np.ndarray]]:
  """Class maps of canvas logits (N, H, W, K): each image's content (image_size (N, 2), from `seg_pad`)
  resized bilinearly to its orig_size (N, 2) before the argmax, as mmseg; a list of N int32 (h, w) arrays
  (sizes differ between images). One image's logits (H, W, K) with (2,) sizes give one array."""
  if np.ndim(logits) == 3:
    return predict(logits[None], np.reshape(image_size, (1, 2)), np.reshape(orig_size, (1, 2)))[0]
  image_size, orig_size = np.asarray(image_size).reshape(-1, 2), np.asarray(orig_size).reshape(-1, 2)
  if not len(image_size) == len(orig_size) == logits.shape[0]:
    raise UserError(f"predict: {logits.shape[0]} logits for {len(image_size)} image_size and {len(orig_size)} "
                    f"orig_size rows")
  _, ch, cw, _ = logits.shape
  out = []
  for i, ((h, w), (oh, ow)) in enumerate(zip(image_size.tolist(), orig_size.tolist())):
    # Zero weights on the canvas' padding drop it; zero rows pad the output to a bucket (cut off below).
    rows = _interp_matrix(h, oh, ch, -(-oh // PREDICT_BUCKET) * PREDICT_BUCKET)
    cols = _interp_matrix(w, ow, cw, -(-ow // PREDICT_BUCKET) * PREDICT_BUCKET)
    out.append(np.asarray(_resized_argmax(logits[i], rows, cols))[:oh, :ow])
  return out


def multi_scale_flip(apply_fn: Callable, image, scales: Sequence[float] = (1.0,), flip: bool = False,
                     size=None) -> jax.Array:
  """mmseg's multi-scale (+ left-right flip) test: the image (N, H, W, C), at its original size, resized by
  each scale (to int(H * s + 0.5) x int(W * s + 0.5), bilinear, no antialias, as mmcv's cv2) and with
  `flip` also mirrored; each output of `apply_fn` (logits of any size; mirrored back) is resized to `size`
  (default (H, W)), softmaxed, and the probabilities averaged: (N, h, w, K). For windows, pass
  `lambda x: sliding_window(f, x, K, crop, stride)` as apply_fn."""
  image = jnp.asarray(image)
  if image.ndim != 4 or not scales:
    raise UserError(f"multi_scale_flip needs images (N, H, W, C) and at least one scale; got shape {image.shape}, "
                    f"scales {scales}")
  n, h, w, c = image.shape
  size = (h, w) if size is None else _pair(size, "size")
  total, views = None, 0
  for s in scales:
    scaled = (max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5)))
    for mirrored in ((False, True) if flip else (False,)):
      probs = _view_probs(apply_fn(_view(image, scaled, mirrored)), size, mirrored)
      total = probs if total is None else total + probs
      views += 1
  return total / views
