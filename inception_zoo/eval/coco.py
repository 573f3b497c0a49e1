"""Detection metrics: COCO box and mask AP through pycocotools' COCOeval, and Pascal VOC mAP.

`CocoEvaluator` collects one image's detections at a time (boxes in the ORIGINAL image's pixels, x1, y1,
x2, y2; labels 1..K mapped back to the annotation file's category ids; masks RLE-encoded at once so
memory stays small) and runs COCOeval (pycocotools, or faster-coco-eval's C++ port with
backend="faster_coco_eval"). The numbers come from COCOeval's `eval['precision']` / `eval['recall']`
arrays, not from `COCOeval.summarize`, whose AP reads maxDets=100 whatever `params.maxDets` says (and
AP50.. read maxDets[2]): AP, AP50, AP75, APs/m/l and ARs/m/l are at the largest of `max_dets`, AR@d at
each d. With the default (1, 10, 100) they are COCOeval.stats exactly; mmdet's (100, 300, 1000) gives AP
at 1000. Empty means, COCO's -1, come back as -1.

`coco_from_source` builds the ground truth in memory from a detection source (the generated shapes):
x1y1x2y2 boxes to [x, y, w, h], masks to RLE, iscrowd and area passed through.

`voc_map`: the VOC devkit's per-class AP at one IoU threshold; detections sorted by score over all
images, each matched to the ground truth of highest IoU (>= threshold, as the MATLAB devkit and mmdet;
IoU on continuous boxes, no "+1": see `inception_zoo.data.detection` for VOC's coordinates), a match on
a difficult object counts neither way, a second match on an object is a false positive. AP is the area
under the interpolated precision envelope (VOC2010+, "area" in mmdet) or the 11-point mean
(`use_07_metric`). mAP averages the classes that have a non-difficult ground-truth object (mmdet).
"""
import contextlib
import io
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from inception_zoo.errors import UserError

IOU_TYPES = ("bbox", "segm")


@contextlib.contextmanager
def _quiet():
  """pycocotools prints its progress on stdout."""
  with contextlib.redirect_stdout(io.StringIO()):
    yield


def encode_masks(masks: np.ndarray) -> list:
  """(N, H, W) binary masks -> COCO compressed RLEs (counts as str, so they serialise to json)."""
  from pycocotools import mask as mask_utils
  masks = np.asarray(masks)
  if not len(masks):
    return []
  rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
  for rle in rles:
    rle["counts"] = rle["counts"].decode("ascii")
  return rles


def _image_size(image) -> tuple:
  if isinstance(image, (bytes, np.bytes_)):
    from PIL import Image
    w, h = Image.open(io.BytesIO(image)).size  # reads the header only
    return h, w
  return tuple(np.asarray(image).shape[:2])


def coco_dataset_from_source(source, label_to_category_id: Optional[Mapping[int, int]] = None,
                             class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  """A COCO-format dict of a detection source's ground truth (every example read once)."""
  mapping = label_to_category_id or getattr(source, "label_to_category_id", None)
  names = class_names or getattr(source, "class_names", None)
  images, annotations, labels = [], [], set()
  for i in range(len(source)):
    ex = source[i]
    image_id = int(ex.get("image_id", i))
    h, w = _image_size(ex["image"])
    images.append({"id": image_id, "height": int(h), "width": int(w)})
    boxes = np.asarray(ex["boxes"], np.float64).reshape(-1, 4)
    n = len(boxes)
    rles = encode_masks(ex["masks"]) if "masks" in ex else None
    iscrowd = np.asarray(ex.get("iscrowd", np.zeros(n)), bool)
    area = ex.get("area")
    for k, (x1, y1, x2, y2) in enumerate(boxes):
      label = int(ex["labels"][k])
      labels.add(label)
      ann = {"id": len(annotations) + 1,  # COCOeval reads id 0 as "unmatched"
             "image_id": image_id, "category_id": int(mapping[label]) if mapping else label,
             "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": int(iscrowd[k]),
             "area": float(area[k]) if area is not None else float((x2 - x1) * (y2 - y1))}
      if rles is not None:
        ann["segmentation"] = rles[k]
      annotations.append(ann)
  if mapping:
    categories = [{"id": int(c), "name": names[lab] if names else str(c)} for lab, c in sorted(mapping.items())]
  else:
    categories = [{"id": lab, "name": names[lab] if names else str(lab)} for lab in sorted(labels)]
  return {"images": images, "annotations": annotations, "categories": categories}


def coco_from_source(source, label_to_category_id: Optional[Mapping[int, int]] = None):
  """The pycocotools COCO object of a detection source's ground truth."""
  from pycocotools.coco import COCO
  return _coco_from_dict(COCO, coco_dataset_from_source(source, label_to_category_id))


def _coco_from_dict(cls, dataset: Dict[str, Any]):
  coco = cls()
  coco.dataset = dataset
  with _quiet():
    coco.createIndex()
  return coco


BACKENDS = ("pycocotools", "faster_coco_eval")


class CocoEvaluator:
  """COCO AP of detections added image by image.

  gt: a pycocotools COCO object, or a detection source (its `.coco` when it has one, as
  `inception_zoo.data.detection.CocoSource`; else built with `coco_from_source`).
  label_to_category_id: label -> category id (default: the source's, else labels are category ids).
  Only the images passed to `add` are evaluated: add every image, with empty arrays when nothing was
  detected.
  """

  def __init__(self, gt, label_to_category_id: Optional[Mapping[int, int]] = None,
               iou_types: Sequence[str] = IOU_TYPES, max_dets: Sequence[int] = (1, 10, 100),
               max_per_image: int = 100, backend: str = "pycocotools"):
    if not iou_types or any(t not in IOU_TYPES for t in iou_types):
      raise UserError(f"iou_types must be some of {IOU_TYPES}; got {iou_types}")
    if backend not in BACKENDS:
      raise UserError(f"unknown COCO evaluation backend '{backend}' ({', '.join(BACKENDS)})")
    if not max_dets or sorted(max_dets) != list(max_dets) or max_per_image < 1:
      raise UserError(f"max_dets must be increasing and max_per_image >= 1; got {max_dets}, {max_per_image}")
    mapping = label_to_category_id or getattr(gt, "label_to_category_id", None)
    if backend == "faster_coco_eval":
      from faster_coco_eval import COCO
    else:
      from pycocotools.coco import COCO
    coco = gt if hasattr(gt, "imgs") and hasattr(gt, "dataset") else getattr(gt, "coco", None)
    if type(coco) is COCO:
      self.gt = coco
    else:  # another backend's COCO object, or a source without one
      self.gt = _coco_from_dict(COCO, coco.dataset if coco is not None else coco_dataset_from_source(gt, mapping))
    self.mapping = mapping
    self.iou_types, self.max_dets = tuple(iou_types), tuple(int(d) for d in max_dets)
    self.max_per_image, self.backend = max_per_image, backend
    if "segm" in self.iou_types and any("segmentation" not in a for a in self.gt.dataset.get("annotations", [])):
      raise UserError("segm evaluation needs ground-truth masks; this ground truth has boxes only "
                      "(use iou_types=('bbox',))")
    self.results = []
    self.image_ids = set()

  def add(self, image_id: int, boxes, scores, labels, masks=None):
    """One image's detections: boxes (N, 4) x1, y1, x2, y2 in the original image's pixels, scores (N,),
    labels (N,) in 1..K, masks (N, H, W) binary at the original resolution (needed for 'segm')."""
    image_id = int(image_id)
    if image_id not in self.gt.imgs:
      raise UserError(f"image id {image_id} is not in the ground truth")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores, labels = np.asarray(scores, np.float64).reshape(-1), np.asarray(labels).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
      raise UserError(f"image {image_id}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
    keep = np.argsort(-scores, kind="stable")[:self.max_per_image]
    try:
      categories = [int(self.mapping[int(labels[k])]) if self.mapping else int(labels[k]) for k in keep]
    except (KeyError, IndexError):
      raise UserError(f"image {image_id}: a label of {sorted(set(labels[keep].tolist()))} has no category id "
                      f"(labels are 1..K)")
    rles = None
    if "segm" in self.iou_types:
      if masks is None:
        raise UserError("iou_types has 'segm' but add() got no masks")
      masks = np.asarray(masks)
      img = self.gt.imgs[image_id]
      if masks.shape != (len(boxes), img["height"], img["width"]):
        raise UserError(f"image {image_id}: masks of shape {masks.shape}; expected ({len(boxes)}, "
                        f"{img['height']}, {img['width']}), one binary mask per box at the original resolution")
      rles = encode_masks(masks[keep] > 0) if len(keep) else []
    self.image_ids.add(image_id)
    for j, (k, category) in enumerate(zip(keep, categories)):
      x1, y1, x2, y2 = boxes[k]
      result = {"image_id": image_id, "category_id": category, "score": float(scores[k]),
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
      if rles is not None:
        result["segmentation"] = rles[j]
      self.results.append(result)

  def _evaluate(self, iou_type: str):
    if self.backend == "faster_coco_eval":
      from faster_coco_eval import COCOeval_faster as COCOeval
    else:
      from pycocotools.cocoeval import COCOeval
    # Copies (loadRes writes into them); mask results go without their box so that loadRes takes the
    # detection's area (the S/M/L split) from the mask, as torchvision's evaluator does.
    drop = "bbox" if iou_type == "segm" else "segmentation"
    results = [{k: v for k, v in r.items() if k != drop} for r in self.results]
    with _quiet():
      dt = self.gt.loadRes(results)
      evaluator = COCOeval(self.gt, dt, iou_type)
      evaluator.params.imgIds = sorted(self.image_ids)
      evaluator.params.maxDets = list(self.max_dets)
      evaluator.evaluate()
      evaluator.accumulate()
    return evaluator

  def summarize(self) -> Dict[str, float]:
    """{'bbox/AP', 'bbox/AP50', 'bbox/AP75', 'bbox/APs', 'bbox/APm', 'bbox/APl', 'bbox/AR@1', ...,
    'bbox/ARs', 'bbox/ARm', 'bbox/ARl', and the same for 'segm/'}."""
    out = {}
    for iou_type in self.iou_types:
      if self.results:
        stats = coco_stats(self._evaluate(iou_type), self.max_dets)
      else:  # loadRes refuses an empty list: nothing detected scores 0
        stats = dict.fromkeys(_stat_names(self.max_dets), 0.0)
      out.update({f"{iou_type}/{k}": v for k, v in stats.items()})
    return out


def _stat_names(max_dets):
  return ["AP", "AP50", "AP75", "APs", "APm", "APl"] + [f"AR@{d}" for d in max_dets] + ["ARs", "ARm", "ARl"]


def coco_stats(evaluator, max_dets: Sequence[int]) -> Dict[str, float]:
  """The summary numbers of an accumulated COCOeval, read from its precision and recall arrays."""
  p = evaluator.params
  precision = np.asarray(evaluator.eval["precision"])  # [T iou, R recall, K class, A area, M maxDets]
  recall = np.asarray(evaluator.eval["recall"])  # [T, K, A, M]
  areas = list(p.areaRngLbl)
  dets, top = list(p.maxDets), max(max_dets)

  def mean(x):
    x = x[x > -1]
    return float(np.mean(x)) if x.size else -1.0

  def ap(iou=None, area="all", det=top):
    x = precision[..., areas.index(area), dets.index(det)]
    return mean(x if iou is None else x[np.isclose(p.iouThrs, iou)])

  def ar(area="all", det=top):
    return mean(recall[..., areas.index(area), dets.index(det)])

  values = [ap(), ap(0.5), ap(0.75), ap(area="small"), ap(area="medium"), ap(area="large")]
  values += [ar(det=d) for d in max_dets] + [ar("small"), ar("medium"), ar("large")]
  return dict(zip(_stat_names(max_dets), values))


def _bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of PyTorch's bilinear resize with align_corners=False (no antialiasing)."""
  src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(int), n_in - 1)
  hi, frac = np.minimum(lo + 1, n_in - 1), src - np.floor(src)
  w = np.zeros((n_out, n_in), np.float32)
  np.add.at(w, (np.arange(n_out), lo), 1.0 - frac)
  np.add.at(w, (np.arange(n_out), hi), frac)
  return w


def paste_masks(mask_probs: np.ndarray, boxes: np.ndarray, height: int, width: int, padding: int = 1) -> np.ndarray:
  """(N, height, width) probabilities: each (M, M) mask resized into its box of an image, on the host at
  the original resolution (torchvision's `paste_masks_in_image`: the mask padded by `padding` and its box
  grown to match, integer boxes, bilinear resize, clipped to the image). The host twin of
  `ops.masks.paste_masks`, which would compile once per original image size."""
  n, m = mask_probs.shape[0], mask_probs.shape[-1]
  out = np.zeros((n, height, width), np.float32)
  if not n:
    return out
  masks = np.pad(mask_probs.astype(np.float32), ((0, 0), (padding, padding), (padding, padding)))
  scale = (m + 2 * padding) / m
  boxes = np.asarray(boxes, np.float32)
  half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
  centre = (boxes[:, 2:] + boxes[:, :2]) * 0.5
  grown = np.concatenate([centre - half, centre + half], axis=1).astype(np.int64)  # torch's truncation
  for i, (x0, y0, x1, y1) in enumerate(grown):
    w, h = max(int(x1 - x0 + 1), 1), max(int(y1 - y0 + 1), 1)
    resized = _bilinear_weights(masks.shape[1], h) @ masks[i] @ _bilinear_weights(masks.shape[2], w).T
    ya, yb, xa, xb = max(y0, 0), min(y1 + 1, height), max(x0, 0), min(x1 + 1, width)
    if ya < yb and xa < xb:
      out[i, ya:yb, xa:xb] = resized[ya - y0:yb - y0, xa - x0:xb - x0]
  return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(N, M) IoUs of x1, y1, x2, y2 boxes (continuous coordinates: area = (x2 - x1)(y2 - y1))."""
  a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), -1)
  area_a = np.prod(a[:, 2:] - a[:, :2], -1)
  area_b = np.prod(b[:, 2:] - b[:, :2], -1)
  return inter / np.maximum(area_a[:, None] + area_b[None] - inter, np.finfo(np.float64).eps)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
  """AP from a precision/recall curve: 11-point mean (VOC2007) or area under the precision envelope."""
  if use_07_metric:
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))
  mrec = np.concatenate([[0.0], recall, [1.0]])
  mpre = np.concatenate([[0.0], precision, [0.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]
  i = np.nonzero(mrec[1:] != mrec[:-1])[0]
  return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_map(detections: Sequence[Mapping[str, Any]], ground_truths: Sequence[Mapping[str, Any]],
            iou_threshold: float = 0.5, use_07_metric: bool = False) -> Dict[str, Any]:
  """VOC mAP. detections[i] and ground_truths[i] belong to image i: detections with 'boxes' (N, 4),
  'scores' (N,), 'labels' (N,); ground truths with 'boxes', 'labels' and optionally 'difficult'.
  Returns {'mAP': float, 'per_class': {label: AP}} over the labels with non-difficult ground truth."""
  if len(detections) != len(ground_truths):
    raise UserError(f"voc_map needs one detection entry per image: {len(detections)} for "
                    f"{len(ground_truths)} images")
  gts = []
  for g in ground_truths:
    n = len(np.asarray(g["labels"]).reshape(-1))
    gts.append((np.asarray(g["boxes"], np.float64).reshape(-1, 4), np.asarray(g["labels"]).reshape(-1),
                np.asarray(g.get("difficult", np.zeros(n)), bool).reshape(-1)))
  classes = sorted({int(lab) for _, labels, difficult in gts for lab in labels[~difficult]})
  per_class = {}
  for c in classes:
    npos = sum(int(((labels == c) & ~difficult).sum()) for _, labels, difficult in gts)
    entries = []  # (score, image, box)
    for i, d in enumerate(detections):
      boxes = np.asarray(d["boxes"], np.float64).reshape(-1, 4)
      scores, labels = np.asarray(d["scores"]).reshape(-1), np.asarray(d["labels"]).reshape(-1)
      entries += [(float(scores[k]), i, boxes[k]) for k in np.nonzero(labels == c)[0]]
    entries.sort(key=lambda e: -e[0])  # stable: equal scores keep image order
    matched = [np.zeros(int((labels == c).sum()), bool) for _, labels, _ in gts]
    tp, fp = np.zeros(len(entries)), np.zeros(len(entries))
    for j, (_, i, box) in enumerate(entries):
      gt_boxes, labels, difficult = gts[i]
      of_class = labels == c
      ious = box_iou(box[None], gt_boxes[of_class])[0]
      if not ious.size or ious.max() < iou_threshold:
        fp[j] = 1
        continue
      k = int(ious.argmax())
      if difficult[of_class][k]:
        continue
      if matched[i][k]:
        fp[j] = 1
      else:
        tp[j], matched[i][k] = 1, True
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    per_class[c] = voc_ap(recall, precision, use_07_metric)
  return {"mAP": float(np.mean(list(per_class.values()))) if per_class else 0.0, "per_class": per_class}
