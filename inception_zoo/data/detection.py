"""Object detection and instance segmentation data: the example format, its pp ops and its readers.

Labels follow torchvision: 1..K are object classes and 0 is background, so a model's `num_classes` (and a
detection `Dataset`'s) is K + 1. A source's example:

    image     HWC uint8 (or encoded bytes, decoded by the `decode` op)
    boxes     (N, 4) float32 x1, y1, x2, y2 in absolute pixels; pixel (r, c) covers [c, c + 1) x [r, r + 1),
              so the tight box of a mask is (min col, min row, max col + 1, max row + 1) (detectron2's)
    labels    (N,) int32 in 1..K
    masks     (N, H, W) uint8 instance masks at the image's resolution (only when the dataset has them)
    iscrowd   (N,) bool: COCO crowd regions, kept out of training targets and ignored by COCOeval
    area      (N,) float32: COCO's annotation area in ORIGINAL image pixels (COCOeval's S/M/L split);
              the geometric ops leave it alone
    difficult (N,) bool, VOC-style sources only: VOC evaluation ignores these objects
    image_id  int

The geometric ops also record `orig_size` (h, w) of the source image, `scale` (the product of the
nominal resize factors) and, `det_pad`, `image_size` (h, w) of the real content on the canvas. A
detection on the network input maps back to the source image by the per-axis ratios orig_size /
image_size, as torchvision's GeneralizedRCNNTransform.postprocess does (rounding makes the two axes'
factors differ slightly from `scale`). A pipeline, e.g. torchvision's COCO recipe:

    decode|det_random_resize((640, 672, 704, 736, 768, 800), 1333)|det_flip|normalize|det_pad(1344)|det_pack(100)

or large-scale jitter `decode|det_random_scale_crop(1024, 0.1, 2.0)|det_flip|normalize|det_pad(1024)|det_pack(100)`,
and for evaluation `decode|det_resize(800, 1333)|normalize|det_pad(1344)|det_pack(100)`. `det_pack` ends
every detection pipeline: it emits only the fixed-shape keys listed in its docstring (grain batches
them), so other source keys (strings, ...) go no further. Images are resized bilinearly with PIL
(antialiased when shrinking, as detectron2's ResizeShortestEdge) and masks with nearest neighbour on
pixel centres (torchvision's and detectron2's choice), so a transformed box stays within 1 px of its
transformed mask's tight box.

Readers (random-access sources, registered by name):

- `coco_json`: `data_dir/annotations/instances_<split>.json` and images in `data_dir/<split>/` or
  `data_dir/images/<split>/`, read with pycocotools. Categories map to labels 1..K in sorted category_id
  order; `source.label_to_category_id` gives the category ids back for evaluation, `source.coco` is the
  pycocotools COCO object (the ground truth of `inception_zoo.eval.coco.CocoEvaluator`). Other layouts
  go through `register_coco_json(name, annotations, images)`: LVIS (`annotations/lvis_v1_{split}.json`;
  images without `file_name` are found by their `coco_url`'s `<folder>/<file>` under data_dir, e.g.
  `train2017/000000155379.jpg`, as detectron2 does), HRSID (`annotations/{split}2017.json`, images in
  `JPEGImages`), iSAID / NWPU VHR-10 COCO exports (their json and image folder). COCOeval on an LVIS file
  is COCO's metric, not LVIS's federated one.
- `voc_xml` / `dior_xml`: Pascal VOC's layout (`Annotations/*.xml`, `JPEGImages/`,
  `ImageSets/Main/<split>.txt`) with VOC's or DIOR's 20 classes (DIOR's `Annotations/Horizontal
  Bounding Boxes` and `JPEGImages-trainval` / `JPEGImages-test` folders are searched too). VOC boxes
  are 1-based inclusive pixel indices; they become (xmin - 1, ymin - 1, xmax, ymax), the continuous
  extent of those pixels, so IoUs without VOC's "+1" equal the devkit's (mmdet 3 subtracts 1 from all
  four and evaluates with its legacy "+1" areas: the same IoUs).
- `shapes`: a generated CPU-sized dataset (discs, rectangles, rotated ellipses and crosses on crops of
  scikit-learn's sample photos, exact masks); `shapes_dataset` for other sizes.
- `tfds_det:coco/2017` and `tfds_det:lvis`: the tfds COCO records (boxes only) and LVIS v1 records (with
  masks; category ids 1..1203 = label, as in the LVIS json) mapped to this format; `tfds_detection` reads
  any tfds dataset with an `objects` feature of `bbox` and `label` (VOC's too). COCOeval on LVIS is COCO's
  metric (its negative / not-exhaustive category lists unused), as for the LVIS json above.
"""
import contextlib
import dataclasses
import functools
import io
import json
import logging
import math
import os
import xml.etree.ElementTree as ET
import zlib
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from inception_zoo.data.datasets import Dataset, register_dataset
from inception_zoo.data.pp import Example, Op, register_op
from inception_zoo.errors import UserError
from inception_zoo.ops.masks import crop_masks

# Per-instance fields: every op that drops or reorders instances does it to all of them.
INSTANCE_KEYS = ("boxes", "labels", "masks", "iscrowd", "area", "difficult")


def _size(size) -> Tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
  """Tight x1, y1, x2, y2 boxes of (N, H, W) masks (max index + 1: pixels cover unit squares); zeros for
  empty masks."""
  masks = np.asarray(masks)
  boxes = np.zeros((len(masks), 4), np.float32)
  if not len(masks):
    return boxes
  rows, cols = masks.any(2), masks.any(1)
  nonempty = rows.any(1)
  h, w = masks.shape[1:]
  boxes[:, 0] = cols.argmax(1)
  boxes[:, 1] = rows.argmax(1)
  boxes[:, 2] = w - cols[:, ::-1].argmax(1)
  boxes[:, 3] = h - rows[:, ::-1].argmax(1)
  boxes[~nonempty] = 0
  return boxes


def _take(ex: Example, keep: np.ndarray) -> Example:
  for k in INSTANCE_KEYS:
    if k in ex:
      ex[k] = np.asarray(ex[k])[keep]
  return ex


def _start(ex: Example) -> Tuple[int, int]:
  """Checks the example and records the source image's size before the first geometric op."""
  h, w = ex["image"].shape[:2]
  ex.setdefault("orig_size", np.array([h, w], np.int32))
  ex.setdefault("scale", np.float32(1.0))
  ex["boxes"] = np.asarray(ex["boxes"], np.float32).reshape(-1, 4)
  if "masks" in ex and tuple(ex["masks"].shape[1:]) != (h, w):
    raise UserError(f"image {ex.get('image_id')}: masks of shape {tuple(ex['masks'].shape)} do not match "
                    f"the {h}x{w} image (the annotation file's image size is wrong?)")
  return h, w


def _resize_image(image: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
  """Bilinear resize of uint8 or float HWC images (float ones channel by channel, PIL's "F" mode)."""
  size = (hw[1], hw[0])
  if image.dtype == np.uint8:
    squeeze = image.shape[-1] == 1
    out = np.asarray(Image.fromarray(np.ascontiguousarray(image[..., 0] if squeeze else image))
                     .resize(size, Image.BILINEAR))
    return out[..., None] if squeeze else out
  return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], np.float32))
                              .resize(size, Image.BILINEAR)) for c in range(image.shape[-1])], -1)


def _nearest(n_in: int, n_out: int) -> np.ndarray:
  """Source indices of a nearest-neighbour resize that samples at pixel centres (PIL's NEAREST)."""
  return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _resize(ex: Example, hw: Tuple[int, int], nominal: float) -> Example:
  h, w = ex["image"].shape[:2]
  nh, nw = hw
  ex["image"] = _resize_image(ex["image"], hw)
  sx, sy = nw / w, nh / h
  ex["boxes"] = (ex["boxes"] * np.float32([sx, sy, sx, sy])).astype(np.float32)
  if "masks" in ex:
    ex["masks"] = ex["masks"][:, _nearest(h, nh)][:, :, _nearest(w, nw)]
  ex["scale"] = np.float32(ex["scale"] * nominal)
  return ex


def _shortest_edge(h: int, w: int, min_size: int, max_size: Optional[int]) -> Tuple[float, Tuple[int, int]]:
  scale = min_size / min(h, w)
  if max_size is not None and max(h, w) * scale > max_size:
    scale = max_size / max(h, w)
  # detectron2 rounds (int(x + 0.5)); torchvision's interpolate floors: at most one pixel apart.
  return scale, (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))


def _check_sizes(name: str, min_sizes, max_size):
  if not min_sizes or any(not isinstance(s, int) or s < 1 for s in min_sizes):
    raise UserError(f"{name} needs positive integer sizes; got {min_sizes}")
  if max_size is not None and max_size < max(min_sizes):
    raise UserError(f"{name}: max_size {max_size} is below min_size {max(min_sizes)}")


@register_op
def det_resize(min_size: int, max_size: Optional[int] = None) -> Op:
  """Scales image, boxes and masks so the short side is min_size unless the long side would then exceed
  max_size (then the long side is max_size): torchvision's GeneralizedRCNNTransform and detectron2's
  ResizeShortestEdge."""
  _check_sizes("det_resize", (min_size,), max_size)

  def op(ex, rng):
    h, w = _start(ex)
    scale, hw = _shortest_edge(h, w, min_size, max_size)
    return _resize(ex, hw, scale)
  return op


@register_op
def det_random_resize(min_sizes: Sequence[int], max_size: Optional[int] = None) -> Op:
  """det_resize to one of min_sizes drawn uniformly (multi-scale training, torchvision's and detectron2's
  'choice' sampling)."""
  min_sizes = (min_sizes,) if isinstance(min_sizes, int) else tuple(min_sizes)
  _check_sizes("det_random_resize", min_sizes, max_size)

  def op(ex, rng):
    h, w = _start(ex)
    scale, hw = _shortest_edge(h, w, min_sizes[int(rng.integers(len(min_sizes)))], max_size)
    return _resize(ex, hw, scale)
  return op


FLIP_DIRECTIONS = ("horizontal", "vertical", "diagonal")


@register_op
def det_flip(p: float = 0.5, direction: str = "horizontal") -> Op:
  """With probability p, mirrors image, boxes and masks left-right ('horizontal'), top-bottom
  ('vertical') or both ('diagonal', mmdet's name for the 180 degree turn)."""
  if direction not in FLIP_DIRECTIONS:
    raise UserError(f"det_flip direction must be one of {', '.join(FLIP_DIRECTIONS)}; got '{direction}'")
  lr, ud = direction in ("horizontal", "diagonal"), direction in ("vertical", "diagonal")

  def op(ex, rng):
    h, w = _start(ex)
    if rng.uniform() >= p:
      return ex
    b = ex["boxes"].copy()
    if lr:
      ex["image"] = np.ascontiguousarray(ex["image"][:, ::-1])
      b[:, 0], b[:, 2] = w - ex["boxes"][:, 2], w - ex["boxes"][:, 0]
      if "masks" in ex:
        ex["masks"] = np.ascontiguousarray(ex["masks"][:, :, ::-1])
    if ud:
      ex["image"] = np.ascontiguousarray(ex["image"][::-1])
      b[:, 1], b[:, 3] = h - ex["boxes"][:, 3], h - ex["boxes"][:, 1]
      if "masks" in ex:
        ex["masks"] = np.ascontiguousarray(ex["masks"][:, ::-1])
    ex["boxes"] = b
    return ex
  return op


@register_op
def det_random_scale_crop(size, scale_min: float = 0.1, scale_max: float = 2.0) -> Op:
  """Random scale, then a random crop of at most `size` (h, w): large-scale jitter (Ghiasi et al. 2021;
  TPU Mask R-CNN's resize_and_crop_image). The image is resized by min(s * H / h, s * W / w), s uniform
  in [scale_min, scale_max]; a crop smaller than `size` stays smaller (det_pad fills the canvas).

  Boxes are clipped to the crop; with masks, each box becomes the tight box of its cropped mask
  (detectron2's recompute_boxes: a clipped box is not tight around what is left of the object).
  Instances whose box is under 1 px wide or high, or whose mask is empty, are dropped.
  """
  th, tw = _size(size)
  if not 0 < scale_min <= scale_max:
    raise UserError(f"det_random_scale_crop needs 0 < scale_min <= scale_max; got {scale_min}, {scale_max}")

  def op(ex, rng):
    h, w = _start(ex)
    s = rng.uniform(scale_min, scale_max)
    factor = min(s * th / h, s * tw / w)
    nh, nw = max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))
    ch, cw = min(nh, th), min(nw, tw)
    y0, x0 = int(rng.integers(0, nh - ch + 1)), int(rng.integers(0, nw - cw + 1))
    masks = ex.pop("masks", None)
    ex = _resize(ex, (nh, nw), factor)
    ex["image"] = ex["image"][y0:y0 + ch, x0:x0 + cw]
    boxes = ex["boxes"] - np.float32([x0, y0, x0, y0])
    boxes = np.clip(boxes, 0, np.float32([cw, ch, cw, ch]))
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    if masks is not None:
      # Resize-then-crop by nearest neighbour is indexing: only the crop's pixels are ever built.
      masks = masks[:, _nearest(h, nh)[y0:y0 + ch]][:, :, _nearest(w, nw)[x0:x0 + cw]]
      keep &= masks.any((1, 2))
      boxes = np.where(keep[:, None], boxes_from_masks(masks), boxes)
      ex["masks"] = masks
    ex["boxes"] = boxes.astype(np.float32)
    return _take(ex, keep)
  return op


@register_op
def det_pad(size) -> Op:
  """Pads image (and masks) bottom and right with zeros to a fixed (H, W) canvas; records `image_size`,
  the (h, w) of the real content. Put it after `normalize` so the padding is the mean colour's 0, as
  torchvision and detectron2 pad."""
  th, tw = _size(size)

  def op(ex, rng):
    h, w = _start(ex)
    if h > th or w > tw:
      raise UserError(f"det_pad({size}): image {ex.get('image_id')} is {h}x{w}, larger than the {th}x{tw} "
                      f"canvas (resize it to fit first, e.g. det_resize with max_size at most the canvas)")
    pad = [(0, th - h), (0, tw - w)] + [(0, 0)] * (ex["image"].ndim - 2)
    ex["image"] = np.pad(ex["image"], pad)
    if "masks" in ex:
      ex["masks"] = np.pad(ex["masks"], [(0, 0), (0, th - h), (0, tw - w)])
    ex["image_size"] = np.array([h, w], np.int32)
    return ex
  return op


_warned_dropped = False


@register_op
def det_pack(max_instances: int, mask_size: int = 112, ignore_difficult: bool = False) -> Op:
  """Fixed shapes for batching; M = max_instances, S = mask_size:

      image (H, W, C) as it is (fix its size with det_pad), boxes (M, 4) float32, labels (M,) int32,
      instance_valid (M,) bool, iscrowd (M,) bool, area (M,) float32, masks (M, S, S) float32 (when the
      example has masks and mask_size > 0: `crop_masks`, TPU Mask R-CNN's fixed-size crops from which
      the 28 x 28 targets are sampled), difficult (M,) bool (when the example has it), image_id int64,
      orig_size (2,) int32, image_size (2,) int32, scale float32, dropped int32

  Rows past the instances are zeros; `area` is the source's (the box area where it has none).
  `instance_valid` is False for padding and for crowd regions (and difficult objects when
  ignore_difficult: mmdet's VOC choice; detectron2 trains on them), which stay out of the training
  targets but stay in the example (matchers may ignore anchors on them). With more than M instances,
  the M largest boxes are kept (non-crowd ones first: a crowd region is large but no target), in their
  order, and `dropped` counts the rest; the first time it happens, a warning says so.
  """
  if max_instances < 1 or mask_size < 0:
    raise UserError(f"det_pack needs max_instances >= 1 and mask_size >= 0; got {max_instances}, {mask_size}")

  def op(ex, rng):
    global _warned_dropped
    h, w = _start(ex)
    boxes = ex["boxes"]
    n = len(boxes)
    iscrowd = np.asarray(ex.get("iscrowd", np.zeros(n, bool)), bool)
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ex.setdefault("iscrowd", iscrowd)
    ex.setdefault("area", box_area)
    keep = np.arange(n)
    if n > max_instances:
      keep = np.sort(np.lexsort((-box_area, iscrowd))[:max_instances])
      if not _warned_dropped:
        _warned_dropped = True
        logging.warning("det_pack: image %s has %d instances, above max_instances=%d; the %d smallest are "
                        "dropped (every example counts its drops in 'dropped'; this warning is shown once)",
                        ex.get("image_id"), n, max_instances, n - max_instances)
    ex = _take(ex, keep)
    k = len(keep)

    def pad(x, dtype):
      x = np.asarray(x, dtype)
      return np.concatenate([x, np.zeros((max_instances - k,) + x.shape[1:], dtype)])

    valid = ~ex["iscrowd"].astype(bool)
    if ignore_difficult and "difficult" in ex:
      valid &= ~ex["difficult"].astype(bool)
    out = {
        "image": ex["image"],
        "boxes": pad(ex["boxes"].reshape(-1, 4), np.float32),
        "labels": pad(ex["labels"], np.int32),
        "instance_valid": pad(valid, bool),
        "iscrowd": pad(ex["iscrowd"], bool),
        "area": pad(ex["area"], np.float32),
        "image_id": np.int64(ex.get("image_id", -1)),
        "orig_size": np.asarray(ex["orig_size"], np.int32),
        "image_size": np.asarray(ex.get("image_size", (h, w)), np.int32),
        "scale": np.float32(ex["scale"]),
        "dropped": np.int32(n - k),
    }
    if "difficult" in ex:
      out["difficult"] = pad(ex["difficult"], bool)
    if "masks" in ex and mask_size:
      out["masks"] = pad(crop_masks(ex["masks"], out["boxes"][:k], mask_size), np.float32)
    return out
  return op


# --- COCO-format json ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
  """pycocotools prints progress ("loading annotations into memory...") on stdout."""
  with contextlib.redirect_stdout(io.StringIO()):
    yield


def segmentation_to_mask(segmentation, h: int, w: int) -> np.ndarray:
  """A COCO segmentation (polygons, uncompressed RLE with a list of counts, or compressed RLE) as an
  (h, w) uint8 mask, through pycocotools.mask."""
  from pycocotools import mask as mask_utils
  if isinstance(segmentation, list):  # polygons: one object may have several parts
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
  elif isinstance(segmentation.get("counts"), list):
    rle = mask_utils.frPyObjects(segmentation, h, w)
  else:
    rle = segmentation
  return mask_utils.decode(rle)


def _has_segmentation(ann) -> bool:
  segm = ann.get("segmentation")
  return bool(segm) and (isinstance(segm, dict) or any(len(p) for p in segm))


def _check_coco(dataset: Dict[str, Any], path: str):
  """One-line errors for what would otherwise fail deep inside training or evaluation."""
  images = {img["id"]: img for img in dataset.get("images", [])}
  categories = {c["id"] for c in dataset.get("categories", [])}
  if not categories:
    raise UserError(f"{path}: no categories")
  for ann in dataset.get("annotations", []):
    where = f"{path}: image {ann.get('image_id')} annotation {ann.get('id')}"
    img = images.get(ann.get("image_id"))
    if img is None:
      raise UserError(f"{where}: the image id is not in 'images'")
    if ann.get("category_id") not in categories:
      raise UserError(f"{where}: category id {ann.get('category_id')} is not in the categories "
                      f"({sorted(categories)[:10]}{'...' if len(categories) > 10 else ''})")
    x, y, bw, bh = ann["bbox"]
    h, w = img["height"], img["width"]
    if bw < 0 or bh < 0:
      raise UserError(f"{where}: box [x, y, w, h] = {ann['bbox']} has a negative size")
    if x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:  # 1 px of tolerance for rounding
      raise UserError(f"{where}: box [x, y, w, h] = {ann['bbox']} is outside the {w}x{h} image")
    segm = ann.get("segmentation")
    if isinstance(segm, list):
      for poly in segm:
        if len(poly) < 6 or len(poly) % 2:
          raise UserError(f"{where}: degenerate polygon of {len(poly) / 2:g} points (needs >= 3 x, y pairs)")
    elif isinstance(segm, dict) and list(segm.get("size", [])) != [h, w]:
      raise UserError(f"{where}: RLE of size {segm.get('size')} on the {h}x{w} image")


class CocoSource:
  """A COCO-format annotation file and its images (encoded, decoded by the `decode` op).

  `masks`: None decodes instance masks when every annotation has a segmentation (False: boxes only).
  Annotations with a zero-width or zero-height box are skipped (torchvision's ConvertCocoPolysToMask).
  """

  def __init__(self, annotation_file: str, image_root: str, masks: Optional[bool] = None):
    from pycocotools.coco import COCO
    try:
      with open(annotation_file) as f:
        dataset = json.load(f)
    except (OSError, ValueError) as e:
      raise UserError(f"cannot read COCO annotations {annotation_file!r}: {e}")
    _check_coco(dataset, annotation_file)
    self.coco = COCO()
    self.coco.dataset = dataset
    with _quiet():
      self.coco.createIndex()
    self.annotation_file, self.image_root = annotation_file, image_root
    anns = dataset.get("annotations", [])
    with_segm = all(_has_segmentation(a) for a in anns) and bool(anns)
    if masks and not with_segm:
      missing = next(a for a in anns if not _has_segmentation(a)) if anns else None
      raise UserError(f"{annotation_file}: masks requested but annotation "
                      f"{missing and missing.get('id')} has no segmentation")
    self.masks = with_segm if masks is None else masks
    self.category_ids = sorted(self.coco.cats)
    self.label_to_category_id = {i + 1: c for i, c in enumerate(self.category_ids)}
    self.category_id_to_label = {c: i + 1 for i, c in enumerate(self.category_ids)}
    self.class_names = ("background",) + tuple(self.coco.cats[c]["name"] for c in self.category_ids)
    self.image_ids = sorted(self.coco.imgs)

  @property
  def num_classes(self) -> int:
    return len(self.category_ids) + 1

  def __len__(self):
    return len(self.image_ids)

  def image_path(self, img: Dict[str, Any]) -> str:
    if "file_name" in img:
      return os.path.join(self.image_root, img["file_name"])
    # LVIS lists images by URL; its train and val images live in COCO's train2017/ and val2017/.
    return os.path.join(self.image_root, *img["coco_url"].split("/")[-2:])

  def __getitem__(self, i):
    image_id = self.image_ids[i]
    img = self.coco.imgs[image_id]
    h, w = img["height"], img["width"]
    anns = [a for a in self.coco.imgToAnns.get(image_id, []) if a["bbox"][2] > 0 and a["bbox"][3] > 0]
    boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    path = self.image_path(img)
    try:
      with open(path, "rb") as f:
        image = f.read()
    except OSError as e:
      raise UserError(f"{self.annotation_file}: cannot read image {image_id}: {e}")
    ex = {
        "image": image,
        "boxes": boxes,
        "labels": np.array([self.category_id_to_label[a["category_id"]] for a in anns], np.int32),
        "iscrowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        "area": np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns], np.float32),
        "image_id": np.int64(image_id),
    }
    if self.masks:
      ex["masks"] = np.stack([segmentation_to_mask(a["segmentation"], h, w) for a in anns]) if anns \
          else np.zeros((0, h, w), np.uint8)
    return ex


def coco_json_dataset(split: str, data_dir: Optional[str], annotations: str = "annotations/instances_{split}.json",
                      images: Sequence[str] = ("{split}", "images/{split}"), masks: Optional[bool] = None) -> Dataset:
  """A COCO-format folder: the annotation file `annotations` and the first existing image folder of
  `images` (both relative to data_dir, `{split}` filled in)."""
  if not data_dir:
    raise UserError("COCO-format datasets need data_dir (set input.data_dir / --config.data_dir)")
  annotation_file = os.path.join(data_dir, annotations.format(split=split))
  if not os.path.isfile(annotation_file):
    raise UserError(f"no COCO annotation file {annotation_file!r} for split '{split}'")
  roots = [os.path.join(data_dir, d.format(split=split)) for d in ((images,) if isinstance(images, str) else images)]
  root = next((r for r in roots if os.path.isdir(r)), None)
  if root is None:
    raise UserError(f"no image folder for split '{split}' (looked for {', '.join(map(repr, roots))})")
  source = CocoSource(annotation_file, root, masks)
  return Dataset(source, source.num_classes)


def register_coco_json(name: str, annotations: str = "annotations/instances_{split}.json",
                       images: Sequence[str] = ("{split}", "images/{split}"), masks: Optional[bool] = None):
  """Registers a COCO-format layout as dataset `name`, e.g. HRSID:
  register_coco_json("hrsid", "annotations/{split}2017.json", ("JPEGImages",)); LVIS v1:
  register_coco_json("lvis_v1", "annotations/lvis_v1_{split}.json", (".",))."""
  register_dataset(name, functools.partial(coco_json_dataset, annotations=annotations, images=images,
                                           masks=masks))


def coco_json(split: str, data_dir: Optional[str] = None) -> Dataset:
  return coco_json_dataset(split, data_dir)


# --- Pascal VOC xml ------------------------------------------------------------------------------------

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
# DIOR's names as its xml files spell them (matched case-insensitively).
DIOR_CLASSES = ("airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
                "Expressway-Service-area", "Expressway-toll-station", "golffield", "groundtrackfield", "harbor",
                "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle", "windmill")


@dataclasses.dataclass
class _VocRecord:
  image_path: str
  boxes: np.ndarray
  labels: np.ndarray
  difficult: np.ndarray


class VocSource:
  """A Pascal VOC-layout split: every xml parsed (and checked) up front, images read on access.

  `image_id` is the position in the split's list; `names[i]` is the list's id (e.g. '2008_000008').
  """

  def __init__(self, data_dir: str, split: str, classes: Sequence[str] = VOC_CLASSES,
               annotation_dirs: Sequence[str] = ("Annotations", "Annotations/Horizontal Bounding Boxes"),
               image_dirs: Sequence[str] = ("JPEGImages", "JPEGImages-trainval", "JPEGImages-test")):
    list_file = os.path.join(data_dir, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(list_file):
      raise UserError(f"VOC-layout dataset: no split list {list_file!r}")
    with open(list_file) as f:
      self.names = [line.split()[0] for line in f if line.strip()]
    self.classes = tuple(classes)
    self.class_names = ("background",) + self.classes
    self.label_to_category_id = {i + 1: i + 1 for i in range(len(self.classes))}
    lookup = {c.lower(): i + 1 for i, c in enumerate(self.classes)}
    ann_dirs = [os.path.join(data_dir, d) for d in annotation_dirs if os.path.isdir(os.path.join(data_dir, d))]
    img_dirs = [os.path.join(data_dir, d) for d in image_dirs if os.path.isdir(os.path.join(data_dir, d))]
    if not ann_dirs or not img_dirs:
      raise UserError(f"VOC-layout dataset {data_dir!r} needs one of the folders {list(annotation_dirs)} and one "
                      f"of {list(image_dirs)}")
    self.records = [self._parse(name, ann_dirs, img_dirs, lookup) for name in self.names]

  @staticmethod
  def _parse(name, ann_dirs, img_dirs, lookup) -> _VocRecord:
    xml_path = next((p for p in (os.path.join(d, name + ".xml") for d in ann_dirs) if os.path.isfile(p)), None)
    if xml_path is None:
      raise UserError(f"no annotation {name}.xml in {ann_dirs}")
    try:
      root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
      raise UserError(f"{xml_path}: cannot parse: {e}")
    candidates = [name + ".jpg"] + [root.findtext("filename", "").strip()]
    image_path = next((p for p in (os.path.join(d, c) for c in candidates if c for d in img_dirs)
                       if os.path.isfile(p)), None)
    if image_path is None:
      raise UserError(f"{xml_path}: no image {candidates[0]} in {img_dirs}")
    size = root.find("size")
    w = float(size.findtext("width")) if size is not None else math.inf
    h = float(size.findtext("height")) if size is not None else math.inf
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.findall("object")):
      cls = (obj.findtext("name") or "").strip()
      if cls.lower() not in lookup:
        raise UserError(f"{xml_path}: object {k} has class '{cls}', not one of the {len(lookup)} classes "
                        f"({', '.join(list(lookup)[:4])}, ...)")
      bb = obj.find("bndbox")
      try:
        x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
      except (AttributeError, TypeError, ValueError):
        raise UserError(f"{xml_path}: object {k} has no numeric bndbox xmin/ymin/xmax/ymax")
      box = (x1 - 1, y1 - 1, x2, y2)  # 1-based inclusive pixel indices -> their continuous extent
      if box[2] <= box[0] or box[3] <= box[1] or box[0] < -1 or box[1] < -1 or box[2] > w + 1 or box[3] > h + 1:
        raise UserError(f"{xml_path}: object {k} box (xmin, ymin, xmax, ymax) = {(x1, y1, x2, y2)} is empty or "
                        f"outside the {w:g}x{h:g} image")
      boxes.append(box)
      labels.append(lookup[cls.lower()])
      difficult.append(obj.findtext("difficult", "0").strip() == "1")
    return _VocRecord(image_path, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int32),
                      np.array(difficult, bool))

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    r = self.records[i]
    with open(r.image_path, "rb") as f:
      image = f.read()
    n = len(r.labels)
    return {"image": image, "boxes": r.boxes.copy(), "labels": r.labels.copy(), "difficult": r.difficult.copy(),
            "iscrowd": np.zeros(n, bool),
            "area": ((r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])).astype(np.float32),
            "image_id": np.int64(i)}


def voc_xml_dataset(split: str, data_dir: Optional[str], classes: Sequence[str] = VOC_CLASSES, **layout) -> Dataset:
  if not data_dir:
    raise UserError("VOC-layout datasets need data_dir (set input.data_dir / --config.data_dir)")
  source = VocSource(data_dir, split, classes, **layout)
  return Dataset(source, len(source.classes) + 1)


def voc_xml(split: str, data_dir: Optional[str] = None) -> Dataset:
  return voc_xml_dataset(split, data_dir, VOC_CLASSES)


def dior_xml(split: str, data_dir: Optional[str] = None) -> Dataset:
  return voc_xml_dataset(split, data_dir, DIOR_CLASSES)


# --- Generated shapes ----------------------------------------------------------------------------------

SHAPE_CLASSES = ("disc", "rectangle", "ellipse", "cross")


@functools.lru_cache(maxsize=1)
def _photos() -> Tuple[np.ndarray, ...]:
  from sklearn.datasets import load_sample_images
  return tuple(load_sample_images().images)  # two 427 x 640 photos, bundled with scikit-learn


def _shape_mask(cls: int, extent: float, cx: float, cy: float, rng: np.random.Generator,
                yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
  """The pixels whose centres fall inside the shape (exact rasterisation)."""
  dx, dy = xx - cx, yy - cy
  if cls == 0:  # disc
    return dx ** 2 + dy ** 2 <= (extent / 2) ** 2
  if cls == 1:  # axis-aligned rectangle, either orientation
    a, b = extent / 2, extent / 2 * rng.uniform(0.4, 1.0)
    if rng.uniform() < 0.5:
      a, b = b, a
    return (np.abs(dx) <= a) & (np.abs(dy) <= b)
  if cls == 2:  # rotated ellipse
    a, b, t = extent / 2, extent / 2 * rng.uniform(0.3, 0.8), rng.uniform(0, np.pi)
    u, v = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1
  arm, half = extent / 2, max(0.5, extent * rng.uniform(0.1, 0.18))  # cross: two bars
  return ((np.abs(dx) <= arm) & (np.abs(dy) <= half)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= half))


class ShapesSource:
  """Scenes of `size` px with 1..max_objects shapes of 4 classes, painted in order (later ones occlude
  earlier ones); example i of a split is a pure function of (split, i, the options). With `semantic`,
  examples also carry `semantic`: (H, W) uint8, the class of the last shape painted on each pixel (0 where
  none), shapes dropped for min_area included (segmentation.py's shapes_seg)."""

  def __init__(self, split: str, num_examples: int, size=96, max_objects: int = 6,
               extent: Tuple[float, float] = (3, 40), min_area: int = 4, seed: int = 0, semantic: bool = False):
    self.split, self.num_examples, self.semantic = split, num_examples, semantic
    self.size, self.max_objects, self.extent, self.min_area = _size(size), max_objects, extent, min_area
    self.seed = (seed, zlib.crc32(split.encode()))  # crc32, not hash(): the same in every process
    self.class_names = ("background",) + SHAPE_CLASSES
    self.label_to_category_id = {i + 1: i + 1 for i in range(len(SHAPE_CLASSES))}

  def __len__(self):
    return self.num_examples

  def __getitem__(self, i):
    if not 0 <= i < self.num_examples:
      raise IndexError(i)
    rng = np.random.default_rng([*self.seed, i])
    h, w = self.size
    photo = _photos()[int(rng.integers(len(_photos())))]
    y0, x0 = int(rng.integers(photo.shape[0] - h + 1)), int(rng.integers(photo.shape[1] - w + 1))
    background = photo[y0:y0 + h, x0:x0 + w]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    while True:  # almost always once: redraw the rare scene whose shapes all end up too small
      image = background.copy()
      semantic = np.zeros((h, w), np.uint8)
      masks, labels = [], []
      for _ in range(int(rng.integers(1, self.max_objects + 1))):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        mask = _shape_mask(cls, rng.uniform(*self.extent), rng.uniform(0, w), rng.uniform(0, h), rng, yy, xx)
        # The colour of a few random candidates farthest from the background it covers.
        under = image[mask].mean(0) if mask.any() else image.reshape(-1, 3).mean(0)
        candidates = rng.integers(0, 256, (8, 3))
        image[mask] = candidates[np.argmax(((candidates - under) ** 2).sum(1))]
        semantic[mask] = cls + 1
        masks = [m & ~mask for m in masks] + [mask]
        labels.append(cls + 1)
      areas = np.array([m.sum() for m in masks])
      keep = areas >= self.min_area
      if keep.any():
        break
    masks = np.stack(masks)[keep].astype(np.uint8)
    ex = {"image": image, "boxes": boxes_from_masks(masks), "labels": np.array(labels, np.int32)[keep],
          "masks": masks, "iscrowd": np.zeros(len(masks), bool), "area": areas[keep].astype(np.float32),
          "image_id": np.int64(i)}
    if self.semantic:
      ex["semantic"] = semantic
    return ex


SHAPES_SPLITS = ("train", "test")


def shapes_dataset(split: str, data_dir: Optional[str] = None, *, size=96, max_objects: int = 6,
                   num_train: int = 2000, num_test: int = 200, seed: int = 0) -> Dataset:
  """The generated shapes dataset: 5 classes (background + disc, rectangle, ellipse, cross)."""
  del data_dir
  if split not in SHAPES_SPLITS:
    raise UserError(f"dataset 'shapes' has splits 'train' and 'test'; got '{split}'")
  if min(_size(size)) < 16 or max(_size(size)) > 427 or max_objects < 1:
    raise UserError(f"shapes needs 16 <= size <= 427 and max_objects >= 1; got {size}, {max_objects}")
  n = num_train if split == "train" else num_test
  return Dataset(ShapesSource(split, n, size, max_objects, seed=seed), len(SHAPE_CLASSES) + 1)


def shapes(split: str, data_dir: Optional[str] = None) -> Dataset:
  return shapes_dataset(split, data_dir)


# --- tfds ----------------------------------------------------------------------------------------------

# The 80 category ids of COCO 2017 in sorted order: tfds's coco label i is the i-th of them.
COCO_CATEGORY_IDS = tuple([*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
                           *range(72, 83), *range(84, 91)])
# Category ids of tfds labels 0..K-1, by dataset, where they are not label + 1 (LVIS v1's are: its builder
# writes category_id - 1 and the ids are 1..1203).
TFDS_CATEGORY_IDS = {"coco": COCO_CATEGORY_IDS}


class TfdsDetectionSource:
  """tfds detection records in this module's format: labels + 1, tfds's normalised ymin, xmin, ymax, xmax
  boxes to absolute x1, y1, x2, y2; is_crowd / is_difficult / area when the dataset has them (tfds's COCO
  and LVIS area is the json's, truncated to an integer), else no crowd, no difficult and the box area;
  masks from `segmentation` (LVIS: one 0 / 255 image per object) when the dataset has it."""

  def __init__(self, source, label_to_category_id: Dict[int, int], class_names: Optional[Sequence[str]] = None):
    self.source, self.label_to_category_id = source, label_to_category_id
    if class_names is not None:
      self.class_names = tuple(class_names)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    record = self.source[i]
    image, objects = record["image"], record["objects"]
    if isinstance(image, (bytes, np.bytes_)):
      w, h = Image.open(io.BytesIO(image)).size
    else:
      h, w = np.asarray(image).shape[:2]
    bbox = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
    n = len(bbox)
    boxes = bbox[:, [1, 0, 3, 2]] * np.float32([w, h, w, h])
    ex = {"image": image, "boxes": boxes, "labels": np.asarray(objects["label"], np.int32) + 1}
    ex["iscrowd"] = np.asarray(objects["is_crowd"], bool) if "is_crowd" in objects else np.zeros(n, bool)
    if "area" in objects:
      ex["area"] = np.asarray(objects["area"], np.float32)
    else:
      ex["area"] = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32)
    if "is_difficult" in objects:
      ex["difficult"] = np.asarray(objects["is_difficult"], bool)
    if "segmentation" in objects:
      seg = np.asarray(objects["segmentation"])
      if n and seg.shape[:3] != (n, h, w):
        raise UserError(f"tfds record {i}: objects/segmentation of shape {seg.shape} for {n} boxes on a "
                        f"{h}x{w} image")
      ex["masks"] = (seg[..., 0] > 127).astype(np.uint8) if n else np.zeros((0, h, w), np.uint8)
    for k in INSTANCE_KEYS:
      if k in ex and len(ex[k]) != n:
        raise UserError(f"tfds record {i}: objects/{k} has {len(ex[k])} entries for {n} boxes")
    ex["image_id"] = np.int64(record.get("image/id", i))
    return ex


def tfds_detection(name: str, split: str, data_dir: Optional[str] = None) -> Dataset:
  """A prepared tfds detection dataset (`objects` with `bbox` and `label`) as a detection source."""
  import tensorflow_datasets as tfds
  try:
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
      features = tfds.builder(name, data_dir=data_dir).info.features
    except ModuleNotFoundError:
      # Some builders' code (COCO's) needs TensorFlow; the prepared files' metadata does not.
      from tensorflow_datasets.core import read_only_builder
      builder = read_only_builder.builder_from_files(name, data_dir=data_dir)
      source, features = builder.as_data_source(split=split), builder.info.features
  except Exception as e:  # tfds raises several types (not found, not prepared, bad split)
    raise UserError(f"cannot read tfds dataset '{name}' split '{split}' (prepare it with `tfds build {name}`): "
                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")
  if "objects" not in features or "bbox" not in features["objects"]:
    raise UserError(f"tfds dataset '{name}' has no objects/bbox feature: not a detection dataset")
  label = features["objects"]["label"]
  ids = TFDS_CATEGORY_IDS.get(name.split("/")[0], ())
  ids = ids if len(ids) == label.num_classes else range(1, label.num_classes + 1)
  mapping = {i + 1: c for i, c in enumerate(ids)}
  return Dataset(TfdsDetectionSource(source, mapping, ("background",) + tuple(label.names)), label.num_classes + 1)


register_dataset("coco_json", coco_json)
register_dataset("voc_xml", voc_xml)
register_dataset("dior_xml", dior_xml)
register_dataset("shapes", shapes)
register_dataset("tfds_det:coco/2017", functools.partial(tfds_detection, "coco/2017"))
register_dataset("tfds_det:lvis", functools.partial(tfds_detection, "lvis"))
