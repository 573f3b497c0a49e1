"""Semantic segmentation data: the example format, its pp ops and its readers.

A source's example:

    image     HWC uint8 (or encoded bytes, decoded by the `decode` op)
    label     HW uint8 class ids 0..K-1, 255 = ignore (absent in the unlabelled splits, see `voc_aug`)
    image_id  int64, the example's position in its split (`source.names[image_id]` names its file)

The geometric ops record `orig_size` (h, w) of the image they first see and `seg_pad` records `image_size`
(h, w) of the real content on its canvas: a prediction on the canvas maps back to the source image by
dropping the padding and resizing to orig_size (`inception_zoo.eval.segmentation.predict`). Images are
resized bilinearly with PIL (detection.py's resize, antialiased when shrinking; mmseg's cv2 is not) and
labels with nearest neighbour on pixel centres. Every op checks that the label map is the image's size.
mmseg's ADE20K recipe (configs/_base_/datasets/ade20k.py), for example:

    decode|seg_random_resize((2048, 512), 0.5, 2.0)|seg_random_crop(512, 0.75)|seg_flip|seg_photometric|
        normalize|seg_pad(512)|seg_pack

and for evaluation `decode|seg_resize_keep_ratio((2048, 512))|normalize|seg_pad(2048)|seg_pack` (a square
canvas fits portrait and landscape images; mmseg infers on each image unpadded, which in JAX would compile
once per image size). As in mmseg, a crop never exceeds its image: `seg_pad` fills the canvas after `normalize`
(the image with 0, the mean colour; the label with the ignore index), as mmseg's SegDataPreProcessor does.
`seg_pack` ends every pipeline and emits only fixed-shape keys. The trainer checks each batch's labels on
the host with `check_labels` and scores predictions against `load_label(source[i])`, the original map.

Readers (random-access sources with `names` and `class_names`; images stay encoded, labels are decoded):

- `ade20k`: `ADEChallengeData2016/images/{training,validation}/*.jpg` and `annotations/.../*.png`, splits
  'train' and 'validation'; data_dir is that folder or its parent. mmseg's reduce_zero_label: 0 (other)
  becomes 255 and the rest shift down by one, 150 classes.
- `cityscapes`: `leftImg8bit/{split}/{city}/*_leftImg8bit.png` with `gtFine/{split}/{city}/
  *_gtFine_labelTrainIds.png` where it exists, else `*_gtFine_labelIds.png` mapped to the 19 train ids
  (`CITYSCAPES_ID_TO_TRAIN_ID`, cityscapesscripts' table); splits are the folders of leftImg8bit, and
  'labeled_<p>' / 'unlabeled_<p>' (e.g. 'labeled_1-8'): the train images named in CPS / MGD's partition
  lists `config_new/subset_train/train_aug_{labeled,unlabeled}_<p>.txt` (or `subset_train/...`), in their order.
- `voc_aug`: Pascal VOC 2012 with the SBD training images, laid out as CPS / TorchSemiSeg's
  `DATA/pascal_voc/` (see `VocAugSource`); 21 classes, 255 = the object borders.
- `shapes_seg`: the detection `shapes` scenes with their semantic map; `shapes_texture`: scenes whose
  class is the texture painted in a shape (colours drawn from the scene's own background), so neither
  colour nor outline tells the class. `shapes_seg_dataset` / `shapes_texture_dataset` for other sizes.
  Splits 'train', 'test', and 'labeled_1-<k>' / 'unlabeled_1-<k>': train scenes 0, k, 2k, ... and the rest.
"""
import os
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from inception_zoo.data import detection
from inception_zoo.data.datasets import Dataset, register_dataset
from inception_zoo.data.pp import Example, Op, register_op
from inception_zoo.errors import UserError

IGNORE = 255


def _size(size) -> Tuple[int, int]:
  size = (size, size) if isinstance(size, int) else tuple(size)
  if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
    raise UserError(f"expected a positive size or (h, w) pair; got {size}")
  return size


def _start(ex: Example) -> Tuple[int, int]:
  """Checks the example and records the source image's size before the first op."""
  image = ex["image"]
  if isinstance(image, (bytes, np.bytes_)):
    raise UserError(f"image {ex.get('image_id')} is still encoded: put `decode` before the seg_ ops")
  h, w = image.shape[:2]
  ex.setdefault("orig_size", np.array([h, w], np.int32))
  if "label" in ex:
    label = np.asarray(ex["label"])
    if label.shape != (h, w):
      raise UserError(f"image {ex.get('image_id')}: label map of shape {label.shape} does not match the {h}x{w} "
                      f"image")
    ex["label"] = label
  return h, w


def _resize(ex: Example, hw: Tuple[int, int]) -> Example:
  h, w = ex["image"].shape[:2]
  if (h, w) == tuple(hw):
    return ex
  ex["image"] = detection._resize_image(ex["image"], hw)
  if "label" in ex:
    ex["label"] = ex["label"][detection._nearest(h, hw[0])][:, detection._nearest(w, hw[1])]
  return ex


def _keep_ratio_size(h: int, w: int, scale) -> Tuple[int, int]:
  """mmcv's rescale_size: as large as fits the long side in max(scale) and the short one in min(scale)."""
  long, short = (scale, scale) if isinstance(scale, (int, float)) else (max(scale), min(scale))
  factor = min(long / max(h, w), short / min(h, w))
  return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


@register_op
def seg_resize(size) -> Op:
  """Resizes image and label to a fixed (h, w) (an int: square)."""
  hw = _size(size)

  def op(ex, rng):
    _start(ex)
    return _resize(ex, hw)
  return op


@register_op
def seg_resize_keep_ratio(scale) -> Op:
  """mmseg's test-time `Resize(scale, keep_ratio=True)`: the largest size whose long side fits max(scale) and
  short side fits min(scale), e.g. (2048, 512) for ADE20K, (2048, 1024) for Cityscapes."""
  _size(scale)

  def op(ex, rng):
    h, w = _start(ex)
    return _resize(ex, _keep_ratio_size(h, w, scale))
  return op


@register_op
def seg_random_resize(scale=(2048, 512), ratio_min: float = 0.5, ratio_max: float = 2.0) -> Op:
  """mmseg's `RandomResize(scale, ratio_range=(ratio_min, ratio_max), keep_ratio=True)`: the scale times a
  uniform ratio (each side truncated to an integer, as mmcv), then seg_resize_keep_ratio to it."""
  scale = _size(scale)
  if not 0 < ratio_min <= ratio_max:
    raise UserError(f"seg_random_resize needs 0 < ratio_min <= ratio_max; got {ratio_min}, {ratio_max}")

  def op(ex, rng):
    h, w = _start(ex)
    ratio = rng.uniform(ratio_min, ratio_max)
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    return _resize(ex, _keep_ratio_size(h, w, target))
  return op


def _class_ratio_ok(label: np.ndarray, cat_max_ratio: float, ignore: int) -> bool:
  """mmseg's test: at least two classes, none covering cat_max_ratio of the labelled pixels."""
  if label.dtype == np.uint8:  # bincount: no sort, unlike np.unique
    values, counts = np.arange(256), np.bincount(label.ravel(), minlength=256)
  else:
    values, counts = np.unique(label, return_counts=True)
  counts = counts[(values != ignore) & (counts > 0)]
  return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


@register_op
def seg_random_scale(ratios=(0.5, 0.75, 1.0, 1.5, 1.75, 2.0)) -> Op:
  """CPS / TorchSemiSeg's `random_scale`: image and label resized by one of `ratios` of their own size (each
  side truncated to an integer), drawn uniformly."""
  if not ratios or min(ratios) <= 0:
    raise UserError(f"seg_random_scale needs positive ratios; got {ratios}")

  def op(ex, rng):
    h, w = _start(ex)
    ratio = ratios[int(rng.integers(len(ratios)))]
    return _resize(ex, (max(1, int(h * ratio)), max(1, int(w * ratio))))
  return op


@register_op
def seg_random_crop(size, cat_max_ratio: float = 0.75, ignore: int = IGNORE) -> Op:
  """mmseg's RandomCrop: a random (h, w) window; with cat_max_ratio < 1, up to 10 redraws until no single class
  covers cat_max_ratio or more of the window's labelled (not `ignore`) pixels and at least two classes are
  in it (after 10 failures the 11th window is kept, as mmseg). A side longer than the image keeps the
  image's length; `seg_pad` fills the canvas (label with ignore)."""
  th, tw = _size(size)

  def op(ex, rng):
    h, w = _start(ex)

    def draw():
      y, x = int(rng.integers(0, max(h - th, 0) + 1)), int(rng.integers(0, max(w - tw, 0) + 1))
      return y, x

    y, x = draw()
    if cat_max_ratio < 1 and "label" in ex:
      for _ in range(10):
        if _class_ratio_ok(ex["label"][y:y + th, x:x + tw], cat_max_ratio, ignore):
          break
        y, x = draw()
    ex["image"] = ex["image"][y:y + th, x:x + tw]
    if "label" in ex:
      ex["label"] = ex["label"][y:y + th, x:x + tw]
    return ex
  return op


@register_op
def seg_flip(p: float = 0.5, direction: str = "horizontal") -> Op:
  """With probability p, mirrors image and label left-right ('horizontal') or top-bottom ('vertical')."""
  if direction not in ("horizontal", "vertical"):
    raise UserError(f"seg_flip direction must be 'horizontal' or 'vertical'; got '{direction}'")
  axis = 1 if direction == "horizontal" else 0

  def op(ex, rng):
    _start(ex)
    if rng.uniform() < p:
      ex["image"] = np.ascontiguousarray(np.flip(ex["image"], axis))
      if "label" in ex:
        ex["label"] = np.ascontiguousarray(np.flip(ex["label"], axis))
    return ex
  return op


# OpenCV's 8-bit RGB -> HSV fixed point (color_hsv.simd.hpp): 12-bit reciprocal tables, rounded.
_HSV_SHIFT = 12
_SDIV = np.concatenate([[0], np.round((255 << _HSV_SHIFT) / np.arange(1, 256))]).astype(np.int64)
_HDIV = np.concatenate([[0], np.round((180 << _HSV_SHIFT) / (6.0 * np.arange(1, 256)))]).astype(np.int64)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
  """uint8 RGB -> uint8 HSV exactly as OpenCV's cvtColor (H in half-degrees 0..179, S and V in 0..255)."""
  x = image.astype(np.int64)
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  v = x.max(-1)
  diff = v - x.min(-1)
  half = 1 << (_HSV_SHIFT - 1)
  s = (diff * _SDIV[v] + half) >> _HSV_SHIFT
  h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
  h = (h * _HDIV[diff] + half) >> _HSV_SHIFT
  h = np.where(h < 0, h + 180, h)
  return np.stack([h, s, v], -1).astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """OpenCV's uint8 HSV -> uint8 RGB in float32, truncated: on images, OpenCV 4.10's cvtColor (its vectorised
  path) gives the same on 99.3% of values and 1 more on the rest."""
  x = hsv.astype(np.float32)
  h, s, v = x[..., 0] / np.float32(30), x[..., 1] / np.float32(255), x[..., 2]  # h: sector 0..6 of the wheel
  sector = np.floor(h)
  f = h - sector
  i = sector.astype(np.int64) % 6
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  r = np.choose(i, [v, q, p, p, t, v])
  g = np.choose(i, [t, v, v, q, p, p])
  b = np.choose(i, [p, p, t, v, v, q])
  return np.clip(np.floor(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)


def _affine(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
  # mmseg's convert: float, clip, then truncate to uint8.
  return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


@register_op
def seg_photometric(brightness_delta: int = 32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                    hue_delta: int = 18) -> Op:
  """mmseg's PhotoMetricDistortion on uint8 RGB (so before `normalize`), each step with probability 1/2:
  brightness + U(-delta, delta); contrast x U(range), either second (mode 1) or last (mode 0), the mode a
  fair coin; saturation x U(range) and hue + randint(-hue_delta, hue_delta) (upper bound excluded, as
  numpy's randint there) in OpenCV's uint8 HSV (hue in half-degrees, modulo 180)."""
  (c_lo, c_hi), (s_lo, s_hi) = contrast_range, saturation_range

  def contrast(img, rng):
    return _affine(img, alpha=rng.uniform(c_lo, c_hi)) if rng.integers(2) else img

  def op(ex, rng):
    _start(ex)
    img = ex["image"]
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
      raise UserError(f"seg_photometric works on uint8 RGB images (put it before normalize); image "
                      f"{ex.get('image_id')} is {img.dtype} of shape {img.shape}")
    if rng.integers(2):
      img = _affine(img, beta=rng.uniform(-brightness_delta, brightness_delta))
    mode = int(rng.integers(2))
    if mode == 1:
      img = contrast(img, rng)
    if rng.integers(2):
      hsv = rgb_to_hsv(img)
      hsv[..., 1] = _affine(hsv[..., 1], alpha=rng.uniform(s_lo, s_hi))
      img = hsv_to_rgb(hsv)
    if rng.integers(2):
      hsv = rgb_to_hsv(img)
      shift = int(rng.integers(-hue_delta, hue_delta)) if hue_delta else 0
      hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 180
      img = hsv_to_rgb(hsv)
    if mode == 0:
      img = contrast(img, rng)
    ex["image"] = img
    return ex
  return op


@register_op
def seg_pad(size, ignore: int = IGNORE) -> Op:
  """Pads bottom and right to a fixed (H, W) canvas, the image with 0 (after `normalize`: the mean colour,
  as mmseg pads) and the label with `ignore`; records `image_size`, the (h, w) of the real content."""
  th, tw = _size(size)

  def op(ex, rng):
    h, w = _start(ex)
    if h > th or w > tw:
      raise UserError(f"seg_pad({size}): image {ex.get('image_id')} is {h}x{w}, larger than the {th}x{tw} canvas "
                      f"(resize or crop it to fit first)")
    ex["image"] = np.pad(ex["image"], [(0, th - h), (0, tw - w)] + [(0, 0)] * (ex["image"].ndim - 2))
    if "label" in ex:
      ex["label"] = np.pad(ex["label"], [(0, th - h), (0, tw - w)], constant_values=ignore)
    ex["image_size"] = np.array([h, w], np.int32)
    return ex
  return op


@register_op
def seg_pack(ignore: int = IGNORE) -> Op:
  """Fixed shapes for batching: image (H, W, C) float32, label (H, W) int32 (all `ignore` for an unlabelled
  example), image_size (2,) int32 (the whole image without seg_pad), orig_size (2,) int32, image_id int64."""
  def op(ex, rng):
    h, w = _start(ex)
    label = ex["label"] if "label" in ex else np.full((h, w), ignore)
    return {"image": np.asarray(ex["image"], np.float32), "label": np.asarray(label, np.int32),
            "image_size": np.asarray(ex.get("image_size", (h, w)), np.int32),
            "orig_size": np.asarray(ex["orig_size"], np.int32), "image_id": np.int64(ex.get("image_id", -1))}
  return op


def check_labels(batch_or_label, num_classes: int, ignore: int = IGNORE):
  """Raises a one-line UserError when a label is not a class id 0..num_classes-1 nor `ignore`: a batch (dict
  with "label" and, to name the image, "image_id") or a label array."""
  batch = batch_or_label if isinstance(batch_or_label, dict) else {"label": batch_or_label}
  label = np.asarray(batch["label"])
  bad = ((label < 0) | (label >= num_classes)) & (label != ignore)
  if bad.any():
    where = np.argwhere(bad)[0]
    image = ""
    if "image_id" in batch:
      ids = np.asarray(batch["image_id"]).reshape(-1)
      image = f" of image {ids[where[0] if label.ndim > 2 else 0]}"
    raise UserError(f"label value {label[tuple(where)]} at pixel {tuple(int(i) for i in where[-2:])}{image} is not "
                    f"a class id 0..{num_classes - 1} nor the ignore index {ignore} (wrong num_classes, or labels "
                    f"that need mapping, e.g. ADE20K's reduce_zero_label or Cityscapes' train ids?)")


def load_label(example: Example) -> np.ndarray:
  """A source example's (H, W) label map at its original size: what evaluation scores against."""
  if "label" not in example:
    raise UserError(f"image {example.get('image_id')} has no label (an unlabelled split cannot be evaluated)")
  return np.asarray(example["label"])


# --- Files ---------------------------------------------------------------------------------------------


def read_label(path: str) -> np.ndarray:
  """A label PNG as (H, W) uint8 ids: grey values ('L') or palette indices ('P', VOC's colour PNGs)."""
  try:
    with Image.open(path) as img:
      if img.mode not in ("L", "P"):
        raise UserError(f"label {path}: PIL mode {img.mode}, expected a single-channel ('L') or palette ('P') PNG "
                        f"of class ids")
      return np.asarray(img, np.uint8)
  except OSError as e:
    raise UserError(f"cannot read label {path}: {e}")


def _read_bytes(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise UserError(f"cannot read image {path}: {e}")


class SegFileSource:
  """Encoded images and label PNGs read on access; `label_maps[i]`, a 256-entry lookup table, maps file i's
  stored ids to class ids (None: as stored). A label path of None gives an unlabelled example."""

  def __init__(self, images: Sequence[str], labels: Sequence[Optional[str]], names: Sequence[str],
               class_names: Sequence[str], label_maps: Optional[Sequence[Optional[np.ndarray]]] = None):
    self.images, self.labels, self.names = list(images), list(labels), list(names)
    self.class_names = tuple(class_names)
    self.label_maps = list(label_maps) if label_maps is not None else [None] * len(self.images)

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    ex = {"image": _read_bytes(self.images[i]), "image_id": np.int64(i)}
    if self.labels[i] is not None:
      label = read_label(self.labels[i])
      lut = self.label_maps[i]
      ex["label"] = label if lut is None else lut[label]
    return ex


def _check_exist(paths: Sequence[Optional[str]], what: str):
  missing = next((p for p in paths if p is not None and not os.path.isfile(p)), None)
  if missing is not None:
    raise UserError(f"{what}: no file {missing!r}")


# --- ADE20K --------------------------------------------------------------------------------------------

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier",
    "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag")

# mmseg's reduce_zero_label: 0 ("other") -> 255, k -> k - 1, 255 stays 255.
REDUCE_ZERO_LABEL = np.arange(-1, 255)
REDUCE_ZERO_LABEL[[0, 255]] = IGNORE
REDUCE_ZERO_LABEL = REDUCE_ZERO_LABEL.astype(np.uint8)
ADE20K_SPLITS = {"train": "training", "validation": "validation"}


def ade20k_dataset(split: str, data_dir: Optional[str], reduce_zero_label: bool = True) -> Dataset:
  if split not in ADE20K_SPLITS:
    raise UserError(f"dataset 'ade20k' has splits 'train' and 'validation'; got '{split}'")
  if not data_dir:
    raise UserError("dataset 'ade20k' needs data_dir (set input.data_dir / --config.data_dir)")
  root = os.path.join(data_dir, "ADEChallengeData2016")
  root = root if os.path.isdir(root) else data_dir
  image_dir = os.path.join(root, "images", ADE20K_SPLITS[split])
  label_dir = os.path.join(root, "annotations", ADE20K_SPLITS[split])
  if not os.path.isdir(image_dir):
    raise UserError(f"dataset 'ade20k': no folder {image_dir!r} (data_dir is ADEChallengeData2016 or its parent)")
  names = sorted(f[:-4] for f in os.listdir(image_dir) if f.endswith(".jpg"))
  if not names:
    raise UserError(f"dataset 'ade20k': no .jpg images in {image_dir!r}")
  labels = [os.path.join(label_dir, n + ".png") for n in names]
  _check_exist(labels, f"ade20k {split} annotations")
  lut, classes = (REDUCE_ZERO_LABEL, ADE20K_CLASSES) if reduce_zero_label else (None, ("other",) + ADE20K_CLASSES)
  source = SegFileSource([os.path.join(image_dir, n + ".jpg") for n in names], labels, names, classes,
                         [lut] * len(names))
  return Dataset(source, len(classes))


def ade20k(split: str, data_dir: Optional[str] = None) -> Dataset:
  return ade20k_dataset(split, data_dir)


# --- Cityscapes ----------------------------------------------------------------------------------------

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
# cityscapesscripts/helpers/labels.py: label id -> train id for ids 0..33; every other id is ignored.
CITYSCAPES_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                             25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_LUT = np.full(256, IGNORE, np.uint8)
CITYSCAPES_LUT[list(CITYSCAPES_ID_TO_TRAIN_ID)] = list(CITYSCAPES_ID_TO_TRAIN_ID.values())


CITYSCAPES_LIST_DIRS = (os.path.join("config_new", "subset_train"), "subset_train")


def _cityscapes_partition(data_dir: str, split: str) -> str:
  """The list file of split 'labeled_<p>' / 'unlabeled_<p>': CPS / MGD's `config_new/subset_train/
  train_aug_{labeled,unlabeled}_<p>.txt`, or the same file in `subset_train/`."""
  file = "train_aug_{}_{}.txt".format(*split.split("_", 1))
  dirs = [os.path.join(data_dir, d) for d in CITYSCAPES_LIST_DIRS]
  for d in dirs:
    if os.path.isfile(os.path.join(d, file)):
      return os.path.join(d, file)
  found = sorted({m.group(1) for d in dirs if os.path.isdir(d) for f in os.listdir(d)
                  for m in [re.fullmatch(r"train_aug_((?:un)?labeled_.+)\.txt", f)] if m})
  raise UserError(f"dataset 'cityscapes' split '{split}': no list {os.path.join(dirs[0], file)!r} nor "
                  f"{os.path.join(dirs[1], file)!r} (partitions found: {found or 'none'})")


def _cityscapes_names(list_file: str, cities: dict, image_root: str) -> List[str]:
  """The base names in a partition list, in its order; a line is `/images/train/<name>.png` and (ignored, CPS's
  flattened layout) its label path."""
  names = []
  with open(list_file) as f:
    for k, line in enumerate(f):
      parts = line.split()
      if not parts:
        continue
      name = os.path.splitext(os.path.basename(parts[0]))[0]
      name = name[:-len("_leftImg8bit")] if name.endswith("_leftImg8bit") else name
      if name not in cities:
        raise UserError(f"{list_file}:{k + 1}: no image {name}_leftImg8bit.png in any city of {image_root!r}")
      names.append(name)
  if not names:
    raise UserError(f"dataset 'cityscapes': the list {list_file!r} is empty")
  return names


def cityscapes(split: str, data_dir: Optional[str] = None) -> Dataset:
  if not data_dir:
    raise UserError("dataset 'cityscapes' needs data_dir (set input.data_dir / --config.data_dir)")
  partition = split.startswith(("labeled_", "unlabeled_"))
  list_file = _cityscapes_partition(data_dir, split) if partition else None
  folder = "train" if partition else split
  image_root = os.path.join(data_dir, "leftImg8bit", folder)
  if not os.path.isdir(image_root):
    found = sorted(os.listdir(os.path.join(data_dir, "leftImg8bit"))) \
        if os.path.isdir(os.path.join(data_dir, "leftImg8bit")) else []
    raise UserError(f"dataset 'cityscapes': no folder {image_root!r} (splits found: {found or 'none'})")
  suffix = "_leftImg8bit.png"
  cities = {}  # base name -> city, in the folders' sorted order
  for city in sorted(os.listdir(image_root)):
    for f in sorted(os.listdir(os.path.join(image_root, city))):
      if f.endswith(suffix):
        cities[f[:-len(suffix)]] = city
  if not cities:
    raise UserError(f"dataset 'cityscapes': no *{suffix} images under {image_root!r}")
  names = _cityscapes_names(list_file, cities, image_root) if partition else list(cities)
  labelled = not split.startswith("unlabeled_")
  images, labels, luts = [], [], []
  for base in names:
    city = cities[base]
    images.append(os.path.join(image_root, city, base + suffix))
    gt = os.path.join(data_dir, "gtFine", folder, city, base + "_gtFine_")
    if not labelled:
      labels.append(None)
      luts.append(None)
    elif os.path.isfile(gt + "labelTrainIds.png"):
      labels.append(gt + "labelTrainIds.png")
      luts.append(None)
    elif os.path.isfile(gt + "labelIds.png"):
      labels.append(gt + "labelIds.png")
      luts.append(CITYSCAPES_LUT)
    else:
      raise UserError(f"dataset 'cityscapes': no {gt}labelTrainIds.png nor labelIds.png for {base}{suffix}")
  return Dataset(SegFileSource(images, labels, names, CITYSCAPES_CLASSES, luts), len(CITYSCAPES_CLASSES))


# --- VOC 2012 + SBD (CPS / TorchSemiSeg layout) --------------------------------------------------------

VOC_SEG_CLASSES = ("background",) + detection.VOC_CLASSES


class VocAugSource(SegFileSource):
  """Pascal VOC 2012 + SBD as CPS (TorchSemiSeg, DATA/pascal_voc/) lays it out:

      train_aug.txt, val.txt, subset_train_aug/train_aug_{labeled,unlabeled}_1-{2,4,8,16}.txt
      train_aug/image/<name>.jpg, train_aug/label/<name>.png, val/image/..., val/label/...

  Splits: 'train' (train_aug.txt, 10,582 images), 'val' (val.txt, 1,449), 'labeled_<p>' and
  'unlabeled_<p>' (the subset_train_aug partition files, e.g. 'labeled_1-8': 1,323 and 'unlabeled_1-8':
  9,259). A list line is a name (its image and label then in train_aug/ or, for 'val', val/) or an image
  path and a label path, relative to data_dir (CPS's self-training lists). Unlabelled splits give examples
  without a `label` (`seg_pack` fills it with 255). Labels are palette PNGs read as indices (255 = borders)."""

  def __init__(self, data_dir: str, split: str):
    if split in ("train", "val"):
      list_file, folder = os.path.join(data_dir, "train_aug.txt" if split == "train" else "val.txt"), \
          "train_aug" if split == "train" else "val"
    elif split.startswith(("labeled_", "unlabeled_")):
      kind, part = split.split("_", 1)
      list_file, folder = os.path.join(data_dir, "subset_train_aug", f"train_aug_{kind}_{part}.txt"), "train_aug"
    else:
      raise UserError(f"dataset 'voc_aug' has splits 'train', 'val', 'labeled_<p>' and 'unlabeled_<p>' "
                      f"(e.g. 'labeled_1-8'); got '{split}'")
    if not os.path.isfile(list_file):
      raise UserError(f"dataset 'voc_aug' split '{split}': no list {list_file!r}")
    labelled = not split.startswith("unlabeled_")
    images, labels, names = [], [], []
    with open(list_file) as f:
      for k, line in enumerate(f):
        parts = line.split()
        if not parts:
          continue
        if len(parts) > 2:
          raise UserError(f"{list_file}:{k + 1}: expected a name or an image and a label path; got {line.strip()!r}")
        if len(parts) == 1 and "/" not in parts[0]:
          name = parts[0]
          image = os.path.join(data_dir, folder, "image", name + ".jpg")
          label = os.path.join(data_dir, folder, "label", name + ".png")
        else:
          image = os.path.join(data_dir, parts[0].lstrip("/"))
          name = os.path.splitext(os.path.basename(image))[0]
          label = os.path.join(data_dir, parts[1].lstrip("/")) if len(parts) == 2 else None
          if label is None and labelled:
            raise UserError(f"{list_file}:{k + 1}: split '{split}' needs a label path after the image")
        images.append(image)
        labels.append(label if labelled else None)
        names.append(name)
    if not images:
      raise UserError(f"dataset 'voc_aug': the list {list_file!r} is empty")
    _check_exist(images, f"voc_aug {split} images")
    _check_exist(labels, f"voc_aug {split} labels")
    super().__init__(images, labels, names, VOC_SEG_CLASSES)


def voc_aug(split: str, data_dir: Optional[str] = None) -> Dataset:
  if not data_dir:
    raise UserError("dataset 'voc_aug' needs data_dir (set input.data_dir / --config.data_dir)")
  root = os.path.join(data_dir, "pascal_voc")
  return Dataset(VocAugSource(root if os.path.isdir(root) else data_dir, split), len(VOC_SEG_CLASSES))


# --- Generated shapes ----------------------------------------------------------------------------------


class ShapesSegSource:
  """The detection shapes scenes (`scenes`, a ShapesSource) with label = the class of the last shape painted on
  each pixel, 0 = background (tiny shapes that detection drops for min_area keep their class here)."""

  def __init__(self, scenes: detection.ShapesSource):
    self.scenes = scenes
    self.class_names = scenes.class_names
    self.names = [str(i) for i in range(len(scenes))]

  def __len__(self):
    return len(self.scenes)

  def __getitem__(self, i):
    scene = self.scenes[i]
    return {"image": scene["image"], "label": scene["semantic"], "image_id": scene["image_id"]}


TEXTURE_CLASSES = ("horizontal stripes", "vertical stripes", "checkerboard", "dots")


def texture(cls: int, h: int, w: int, period: float, phase: Tuple[float, float]) -> np.ndarray:
  """(h, w) bool pattern of texture class `cls` (an index of TEXTURE_CLASSES) with `period` px."""
  yy, xx = np.mgrid[0:h, 0:w] + 0.5
  y, x = yy + phase[0], xx + phase[1]
  half = period / 2
  if cls == 0:
    return np.floor(y / half) % 2 == 0
  if cls == 1:
    return np.floor(x / half) % 2 == 0
  if cls == 2:
    return (np.floor(y / half) + np.floor(x / half)) % 2 == 0
  dy, dx = y % period - half, x % period - half
  return dy ** 2 + dx ** 2 <= (period / 3) ** 2


class ShapesTextureSource:
  """Scenes of the shapes generator whose objects are repainted with a texture: each object's class is drawn
  uniformly (independent of its outline), its texture gets a random period (4-7 px) and phase and two colours
  picked from the scene's own background pixels, so colour says nothing about class (nor much about
  foreground). Pixels of shapes too small to keep (min_area) are labelled 255."""

  def __init__(self, scenes: detection.ShapesSource):
    self.scenes = scenes
    self.class_names = ("background",) + TEXTURE_CLASSES
    self.names = [str(i) for i in range(len(scenes))]

  def __len__(self):
    return len(self.scenes)

  def __getitem__(self, i):
    scene = self.scenes[i]
    rng = np.random.default_rng([*self.scenes.seed, i, 1])  # a stream of its own: the scene's is untouched
    image, masks = scene["image"].copy(), scene["masks"].astype(bool)
    h, w = image.shape[:2]
    label = np.zeros((h, w), np.uint8)
    background = image[scene["semantic"] == 0]
    if len(background) < 2:
      background = image.reshape(-1, 3)
    for mask in masks:
      cls = int(rng.integers(len(TEXTURE_CLASSES)))
      pattern = texture(cls, h, w, rng.uniform(4, 7), tuple(rng.uniform(0, 7, 2)))
      # The pair farthest apart of a few random pairs of background colours, so the texture shows.
      pairs = background[rng.integers(len(background), size=(8, 2))].astype(np.int64)
      a, b = pairs[np.argmax(((pairs[:, 0] - pairs[:, 1]) ** 2).sum(1))]
      if ((a - b) ** 2).sum() < 64 ** 2:  # a flat background (sky): move b away from a so the texture shows
        b = np.where(a < 128, a + 96, a - 96)
      image[mask] = np.where(pattern[mask][:, None], a, b)
      label[mask] = cls + 1
    label[(scene["semantic"] > 0) & ~masks.any(0)] = IGNORE
    return {"image": image, "label": label, "image_id": scene["image_id"]}


class SubsetSource:
  """Examples `indices` of `source`, numbered by their position here (image_id; `names` follow); unlabelled
  (`labelled=False`) drops the labels, as voc_aug's unlabelled splits have none."""

  def __init__(self, source, indices: Sequence[int], labelled: bool = True):
    self.source, self.indices, self.labelled = source, [int(i) for i in indices], labelled
    self.class_names = source.class_names
    self.names = [source.names[i] for i in self.indices]

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    ex = dict(self.source[self.indices[i]])
    ex["image_id"] = np.int64(i)
    if not self.labelled:
      ex.pop("label", None)
    return ex


def _shapes_split(name: str, split: str) -> Tuple[str, Optional[Tuple[bool, int]]]:
  """'train' / 'test' and no partition, or 'train' and (labelled, k) for 'labeled_1-<k>' / 'unlabeled_1-<k>'."""
  m = re.fullmatch(r"(labeled|unlabeled)_1-([1-9][0-9]*)", split)
  if m:
    return "train", (m.group(1) == "labeled", int(m.group(2)))
  if split not in detection.SHAPES_SPLITS:
    raise UserError(f"dataset '{name}' has splits 'train', 'test', 'labeled_1-<k>' and 'unlabeled_1-<k>' (train "
                    f"scenes 0, k, 2k, ... and the others, k >= 1); got '{split}'")
  return split, None


def _shapes_partition(name: str, split: str, source, partition: Optional[Tuple[bool, int]]):
  if partition is None:
    return source
  labelled, k = partition
  indices = [i for i in range(len(source)) if (i % k == 0) == labelled]
  if not indices:
    raise UserError(f"dataset '{name}' split '{split}' is empty ({len(source)} train scenes)")
  return SubsetSource(source, indices, labelled)


def _shapes_scenes(name: str, split: str, size, max_objects: int, num_train: int, num_test: int, seed: int,
                   **options) -> detection.ShapesSource:
  if min(_size(size)) < 16 or max(_size(size)) > 427 or max_objects < 1:
    raise UserError(f"{name} needs 16 <= size <= 427 and max_objects >= 1; got {size}, {max_objects}")
  n = num_train if split == "train" else num_test
  return detection.ShapesSource(split, n, size, max_objects, seed=seed, semantic=True, **options)


def shapes_seg_dataset(split: str, data_dir: Optional[str] = None, *, size=96, max_objects: int = 6,
                       num_train: int = 2000, num_test: int = 200, seed: int = 0) -> Dataset:
  """The detection shapes as semantic segmentation: 5 classes (background, disc, rectangle, ellipse, cross)."""
  del data_dir
  folder, partition = _shapes_split("shapes_seg", split)
  scenes = _shapes_scenes("shapes_seg", folder, size, max_objects, num_train, num_test, seed)
  source = _shapes_partition("shapes_seg", split, ShapesSegSource(scenes), partition)
  return Dataset(source, len(detection.SHAPE_CLASSES) + 1)


def shapes_texture_dataset(split: str, data_dir: Optional[str] = None, *, size=96, max_objects: int = 6,
                           num_train: int = 2000, num_test: int = 200, seed: int = 0) -> Dataset:
  """Textured shapes: 5 classes (background, horizontal stripes, vertical stripes, checkerboard, dots). The
  shapes are larger than detection's (12-48 px) so that a few periods of texture fit in each."""
  del data_dir
  folder, partition = _shapes_split("shapes_texture", split)
  scenes = _shapes_scenes("shapes_texture", folder, size, max_objects, num_train, num_test, seed,
                          extent=(12, 48), min_area=16)
  source = _shapes_partition("shapes_texture", split, ShapesTextureSource(scenes), partition)
  return Dataset(source, len(TEXTURE_CLASSES) + 1)


def shapes_seg(split: str, data_dir: Optional[str] = None) -> Dataset:
  return shapes_seg_dataset(split, data_dir)


def shapes_texture(split: str, data_dir: Optional[str] = None) -> Dataset:
  return shapes_texture_dataset(split, data_dir)


register_dataset("ade20k", ade20k)
register_dataset("cityscapes", cityscapes)
register_dataset("voc_aug", voc_aug)
register_dataset("shapes_seg", shapes_seg)
register_dataset("shapes_texture", shapes_texture)
