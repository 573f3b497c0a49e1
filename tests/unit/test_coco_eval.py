"""COCO AP through COCOeval (a case computed by hand, perfect detections, max_dets, pycocotools against
faster-coco-eval) and VOC mAP (by hand, difficult objects, the 11-point metric)."""
import numpy as np
import pytest

from inception_zoo import UserError
from inception_zoo.data import detection
from inception_zoo.eval import coco as coco_eval


def boxes_source():
  """Two images, three ground-truth boxes of one class (all COCO-small)."""
  return [
      {"image": np.zeros((40, 40, 3), np.uint8), "boxes": np.float32([[0, 0, 10, 10], [20, 20, 30, 30]]),
       "labels": np.int32([1, 1]), "image_id": 1},
      {"image": np.zeros((40, 40, 3), np.uint8), "boxes": np.float32([[0, 0, 20, 20]]), "labels": np.int32([1]),
       "image_id": 2},
  ]


def add_hand_case(evaluator):
  # Scores 0.9 (exact, image 1), 0.8 (IoU 0.63 with the 20 x 20 box of image 2), 0.7 (far: a false
  # positive), 0.6 (exact, image 1).
  evaluator.add(1, [[0, 0, 10, 10], [35, 35, 39, 39], [20, 20, 30, 30]], [0.9, 0.7, 0.6], [1, 1, 1])
  evaluator.add(2, [[0, 0, 20, 12.6]], [0.8], [1])


def test_hand_computed_ap():
  evaluator = coco_eval.CocoEvaluator(boxes_source(), iou_types=("bbox",))
  add_hand_case(evaluator)
  stats = evaluator.summarize()
  # IoU thresholds 0.5, 0.55, 0.6: TP TP FP TP -> precision 1 up to recall 2/3, then 3/4; over COCO's 101
  # recall points: (67 * 1 + 34 * 0.75) / 101. Thresholds 0.65..0.95 (7): TP FP FP TP -> precision 1 up
  # to recall 1/3, 1/2 up to 2/3, then nothing: (34 * 1 + 33 * 0.5) / 101 = 0.5.
  ap_low, ap_high = 92.5 / 101, 50.5 / 101
  assert stats["bbox/AP50"] == pytest.approx(ap_low, abs=1e-12)
  assert stats["bbox/AP75"] == pytest.approx(ap_high, abs=1e-12)
  assert stats["bbox/AP"] == pytest.approx((3 * ap_low + 7 * ap_high) / 10, abs=1e-12)
  assert stats["bbox/APs"] == stats["bbox/AP"] and stats["bbox/APm"] == stats["bbox/APl"] == -1
  # Recall 1 at 3 thresholds, 2/3 at 7; with one detection per image: 2/3 at 3, 1/3 at 7.
  assert stats["bbox/AR@100"] == stats["bbox/AR@10"] == pytest.approx((3 + 7 * 2 / 3) / 10)
  assert stats["bbox/AR@1"] == pytest.approx((3 * 2 / 3 + 7 / 3) / 10)
  # The same numbers as COCOeval.summarize's with the default maxDets.
  from pycocotools.cocoeval import COCOeval
  with coco_eval._quiet():
    reference = COCOeval(evaluator.gt, evaluator.gt.loadRes(evaluator.results), "bbox")
    reference.evaluate()
    reference.accumulate()
    reference.summarize()
  np.testing.assert_allclose(list(stats.values()), reference.stats, atol=1e-12)


def test_max_dets_other_than_coco_defaults_are_read_at_the_largest():
  evaluator = coco_eval.CocoEvaluator(boxes_source(), iou_types=("bbox",), max_dets=(1, 10, 1000),
                                      max_per_image=1000)
  add_hand_case(evaluator)
  stats = evaluator.summarize()
  assert stats["bbox/AP"] == pytest.approx((3 * 92.5 / 101 + 7 * 50.5 / 101) / 10) and "bbox/AR@1000" in stats
  # COCOeval.summarize looks its AP up at maxDets=100, absent here: -1.
  from pycocotools.cocoeval import COCOeval
  with coco_eval._quiet():
    reference = COCOeval(evaluator.gt, evaluator.gt.loadRes(evaluator.results), "bbox")
    reference.params.maxDets = [1, 10, 1000]
    reference.evaluate()
    reference.accumulate()
    reference.summarize()
  assert reference.stats[0] == -1 and stats["bbox/AP50"] == pytest.approx(reference.stats[1])


def test_max_per_image_keeps_the_best_scores():
  evaluator = coco_eval.CocoEvaluator(boxes_source(), iou_types=("bbox",), max_per_image=1)
  add_hand_case(evaluator)
  assert [r["score"] for r in evaluator.results] == [0.9, 0.8]


def shapes_source(n):
  source = detection.shapes("test").source
  return [source[i] for i in range(n)]


def perturbed_detections(examples, seed=0):
  """Random detections near the ground truth: jittered boxes, shifted masks, wrong labels, false positives."""
  rng = np.random.default_rng(seed)
  out = []
  for ex in examples:
    boxes, labels, masks = [], [], []
    for box, label, mask in zip(ex["boxes"], ex["labels"], ex["masks"]):
      if rng.uniform() < 0.85:
        boxes.append(box + rng.normal(0, 1, 4))
        labels.append(label if rng.uniform() < 0.9 else rng.integers(1, 5))
        masks.append(np.roll(mask, tuple(rng.integers(-1, 2, 2)), (0, 1)))
    for _ in range(rng.integers(0, 3)):
      x, y = rng.uniform(0, 80, 2)
      w, h = rng.uniform(3, 30, 2)
      boxes.append([x, y, x + w, y + h])
      labels.append(rng.integers(1, 5))
      m = np.zeros((96, 96), np.uint8)
      m[int(y):int(y + h), int(x):int(x + w)] = 1
      masks.append(m)
    n = len(boxes)
    out.append((ex["image_id"], np.reshape(boxes, (n, 4)), rng.uniform(size=n), np.int32(labels),
                np.reshape(masks, (n, 96, 96))))
  return out


def test_perfect_detections_score_one():
  examples = shapes_source(30)
  evaluator = coco_eval.CocoEvaluator(examples)
  for ex in examples:
    evaluator.add(ex["image_id"], ex["boxes"], np.linspace(1, 0.5, len(ex["boxes"])), ex["labels"], ex["masks"])
  stats = evaluator.summarize()
  for t in ("bbox", "segm"):
    for k in ("AP", "AP50", "AP75", "APs", "AR@100"):
      assert stats[f"{t}/{k}"] == pytest.approx(1.0), (t, k)


def test_pycocotools_and_faster_coco_eval_agree_on_random_detections():
  examples = shapes_source(60)
  results = {}
  for backend in coco_eval.BACKENDS:
    evaluator = coco_eval.CocoEvaluator(examples, backend=backend)
    for args in perturbed_detections(examples):
      evaluator.add(*args)
    results[backend] = evaluator.summarize()
    assert type(evaluator.gt).__module__.split(".")[0] == backend
  reference, faster = results["pycocotools"], results["faster_coco_eval"]
  assert 0.2 < reference["bbox/AP"] < 0.95 and 0.2 < reference["segm/AP"] < 0.95  # neither trivial nor perfect
  for k in reference:  # measured: identical to the last bit on these detections
    assert faster[k] == pytest.approx(reference[k], abs=1e-6), k


def test_evaluator_errors_name_the_cause():
  examples = shapes_source(2)
  evaluator = coco_eval.CocoEvaluator(examples, label_to_category_id={1: 1, 2: 2, 3: 3, 4: 4})
  with pytest.raises(UserError, match="not in the ground truth"):
    evaluator.add(999, [[0, 0, 1, 1]], [1.0], [1], np.zeros((1, 96, 96)))
  with pytest.raises(UserError, match="no masks"):
    evaluator.add(0, [[0, 0, 1, 1]], [1.0], [1])
  with pytest.raises(UserError, match="masks of shape"):
    evaluator.add(0, [[0, 0, 1, 1]], [1.0], [1], np.zeros((1, 50, 50)))
  with pytest.raises(UserError, match="no category id"):
    evaluator.add(0, [[0, 0, 1, 1]], [1.0], [9], np.zeros((1, 96, 96)))
  with pytest.raises(UserError, match="boxes only"):
    coco_eval.CocoEvaluator(boxes_source())
  nothing = coco_eval.CocoEvaluator(boxes_source(), iou_types=("bbox",))
  nothing.add(1, np.zeros((0, 4)), [], [])
  assert nothing.summarize()["bbox/AP"] == 0.0


def test_voc_map_by_hand():
  gts = [{"boxes": [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 5, 5]], "labels": [1, 1, 2],
          "difficult": [False, True, False]},
         {"boxes": [[0, 0, 20, 20]], "labels": [1]}]
  dets = [{"boxes": [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [0, 0, 5, 5]], "scores": [0.9, 0.8, 0.65, 0.5],
           "labels": [1, 1, 1, 2]},
          {"boxes": [[30, 30, 40, 40], [0, 0, 20, 20]], "scores": [0.7, 0.6], "labels": [1, 1]}]
  # Class 1 (2 non-difficult objects): TP, (difficult: ignored), FP (far), FP (second hit), TP
  # -> recall .5 .5 .5 1, precision 1 .5 1/3 .5. Area: .5 * 1 + .5 * .5; 11-point: (6 * 1 + 5 * .5) / 11.
  result = coco_eval.voc_map(dets, gts)
  assert result["per_class"] == {1: pytest.approx(0.75), 2: pytest.approx(1.0)}
  assert result["mAP"] == pytest.approx(0.875)
  result07 = coco_eval.voc_map(dets, gts, use_07_metric=True)
  assert result07["per_class"][1] == pytest.approx(8.5 / 11)
  # A box of IoU 0.5 with its object counts at threshold 0.5 (>=), not above it.
  half = [{"boxes": [[0, 0, 10, 5]], "scores": [1.0], "labels": [1]}]
  assert coco_eval.voc_map(half, [{"boxes": [[0, 0, 10, 10]], "labels": [1]}])["mAP"] == 1.0
  assert coco_eval.voc_map(half, [{"boxes": [[0, 0, 10, 10]], "labels": [1]}], iou_threshold=0.6)["mAP"] == 0.0


def test_coco_folder_ground_truth_gets_category_ids_back(tmp_path):
  import json
  from PIL import Image
  (tmp_path / "val").mkdir()
  (tmp_path / "annotations").mkdir()
  Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "val" / "a.png")
  polygons = {1: [5, 5, 25, 5, 25, 15, 5, 15], 2: [30, 20, 45, 20, 45, 38, 30, 38]}
  (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps({
      "images": [{"id": 77, "file_name": "a.png", "height": 40, "width": 50}],
      "categories": [{"id": 7, "name": "kite"}, {"id": 3, "name": "car"}],
      "annotations": [{"id": k, "image_id": 77, "category_id": (7, 3)[k - 1], "iscrowd": 0, "segmentation": [p],
                       "bbox": [p[0], p[1], p[2] - p[0], p[5] - p[1]], "area": (p[2] - p[0]) * (p[5] - p[1])}
                      for k, p in polygons.items()]}))
  source = detection.coco_json("val", str(tmp_path)).source
  evaluator = coco_eval.CocoEvaluator(source)
  assert evaluator.gt is source.coco
  ex = source[0]
  evaluator.add(77, ex["boxes"], [0.9, 0.8], ex["labels"], ex["masks"])
  stats = evaluator.summarize()
  assert stats["bbox/AP"] == pytest.approx(1.0) and stats["segm/AP"] == pytest.approx(1.0)
  swapped = coco_eval.CocoEvaluator(source)
  swapped.add(77, ex["boxes"], [0.9, 0.8], 3 - ex["labels"], ex["masks"])
  assert swapped.summarize()["bbox/AP"] == 0.0


def test_paste_masks_is_torchvisions():
  """The host paste of 28x28 mask probabilities at an image's original size equals torchvision's
  `paste_masks_in_image` (boxes partly outside the image, thin and large)."""
  import torch
  from torchvision.models.detection.roi_heads import paste_masks_in_image

  from inception_zoo.eval.coco import paste_masks
  rng = np.random.default_rng(0)
  probs = rng.uniform(size=(5, 28, 28)).astype(np.float32)
  boxes = np.array([[10, 12, 60, 40], [-8, -5, 20, 30], [50, 70, 130, 96], [3.7, 4.2, 5.1, 90.6],
                    [0, 0, 119, 89]], np.float32)
  theirs = paste_masks_in_image(torch.from_numpy(probs)[:, None], torch.from_numpy(boxes), (90, 120), padding=1)
  np.testing.assert_allclose(paste_masks(probs, boxes, 90, 120), theirs[:, 0].numpy(), atol=1e-5)
