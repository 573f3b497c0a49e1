"""Detection data: the pp ops keep boxes on their masks, det_pack's fixed shapes, and the readers (a COCO
folder and a VOC folder written here, the generated shapes, tfds COCO on mocked records)."""
import json
import logging
import types

import numpy as np
import pytest
from PIL import Image

from inception_zoo import UserError
from inception_zoo.data import datasets, detection, pp
from inception_zoo.data.detection import boxes_from_masks


def shapes_examples(n=6, split="test"):
  source = datasets.get_dataset("shapes", split).source
  return [source[i] for i in range(n)]


def tall(ex):
  """The example cut to a 96 x 64 (h x w) image, so resizes see two different sides."""
  ex = dict(ex, image=ex["image"][:, :64], masks=ex["masks"][:, :, :64])
  keep = ex["masks"].any((1, 2))
  ex = {k: (v[keep] if k in detection.INSTANCE_KEYS else v) for k, v in ex.items()}
  ex["boxes"] = boxes_from_masks(ex["masks"])
  return ex


def test_shapes_are_deterministic_with_tight_boxes_and_occlusion():
  test = datasets.get_dataset("shapes", "test")
  assert test.num_classes == 5 and len(test) == 200 and len(datasets.get_dataset("shapes", "train")) == 2000
  a, b = test.source[7], test.source[7]
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["image"], datasets.get_dataset("shapes", "train").source[7]["image"])
  counts = []
  for ex in shapes_examples(40):
    n = len(ex["labels"])
    counts.append(n)
    assert ex["image"].shape == (96, 96, 3) and ex["image"].dtype == np.uint8
    assert ex["masks"].shape == (n, 96, 96) and 1 <= n <= 6
    assert set(ex["labels"]) <= {1, 2, 3, 4}
    np.testing.assert_array_equal(ex["boxes"], boxes_from_masks(ex["masks"]))  # tight, exactly
    np.testing.assert_array_equal(ex["area"], ex["masks"].sum((1, 2)))
    assert ex["area"].min() >= 4
    assert ex["masks"].sum(0).max() <= 1  # occlusion: a pixel belongs to one instance at most
  assert max(counts) > 3
  with pytest.raises(UserError, match="splits"):
    datasets.get_dataset("shapes", "validation")


def assert_boxes_on_masks(ex, tol=1.0):
  assert ex["masks"].shape[1:] == ex["image"].shape[:2]
  assert len(ex["boxes"]) == len(ex["labels"]) == len(ex["masks"]) == len(ex["area"]) == len(ex["iscrowd"])
  nonempty = ex["masks"].any((1, 2))
  np.testing.assert_allclose(ex["boxes"][nonempty], boxes_from_masks(ex["masks"])[nonempty], atol=tol)


@pytest.mark.parametrize("spec", ["det_resize(150, 200)", "det_resize(40)", "det_random_resize((50, 80, 120), 150)",
                                  "det_resize(150, 200)|det_pad((208, 200))", "det_flip(1.0)",
                                  "det_flip(1.0, direction='vertical')", "det_flip(1.0, direction='diagonal')",
                                  "det_random_scale_crop(64, 0.3, 2.0)", "det_random_scale_crop((48, 80), 1.0, 1.5)",
                                  "det_random_resize((70, 90))|det_flip|det_random_scale_crop(72, 0.5, 1.5)"])
def test_geometric_ops_keep_boxes_on_their_masks(spec):
  fn = pp.build(spec)
  for i, ex in enumerate(shapes_examples(6)):
    for src in (ex, tall(ex)):
      out = fn(dict(src), np.random.default_rng(i))
      assert out["image"].dtype == np.uint8 and out["masks"].dtype == np.uint8
      assert_boxes_on_masks(out, tol=0 if "flip" in spec and "resize" not in spec else 1.0)
      if "crop" in spec:  # crops rebuild boxes from what is left of the masks, and drop what is gone
        assert_boxes_on_masks(out, tol=0)
        w, h = out["boxes"][:, 2] - out["boxes"][:, 0], out["boxes"][:, 3] - out["boxes"][:, 1]
        assert (w >= 1).all() and (h >= 1).all() and out["masks"].any((1, 2)).all()


def test_resize_and_pad_record_the_sizes_that_map_detections_back():
  ex = tall(shapes_examples(1)[0])  # 96 x 64
  out = pp.build("det_resize(150, 200)|det_pad(208)")(dict(ex), np.random.default_rng(0))
  # short side 64 -> 150 would make the long side 225 > 200: the long side gets 200 (scale 200 / 96)
  assert out["image"].shape == (208, 208, 3)
  np.testing.assert_array_equal(out["image_size"], [200, 133])
  np.testing.assert_array_equal(out["orig_size"], [96, 64])
  assert out["scale"] == pytest.approx(200 / 96)
  assert not out["image"][200:].any() and not out["image"][:, 133:].any() and not out["masks"][:, 200:].any()
  back = out["boxes"] * np.float32([64 / 133, 96 / 200] * 2)  # orig_size / image_size, per axis
  np.testing.assert_allclose(back, ex["boxes"], atol=0.5)
  # Float (normalised) images resize too, channel by channel: the same up to uint8 rounding.
  as_float = pp.build("normalize|det_resize(150, 200)")(dict(ex), np.random.default_rng(0))["image"]
  as_uint8 = pp.build("det_resize(150, 200)|normalize")(dict(ex), np.random.default_rng(0))["image"]
  assert as_float.dtype == np.float32 and as_float.shape == as_uint8.shape == (200, 133, 3)
  np.testing.assert_allclose(as_float, as_uint8, atol=0.05)
  with pytest.raises(UserError, match="larger than the 100x100 canvas"):
    pp.build("det_resize(150, 200)|det_pad(100)")(dict(ex), np.random.default_rng(0))
  with pytest.raises(UserError, match="direction"):
    pp.build("det_flip(direction='sideways')")


def test_flip_mirrors_image_boxes_and_masks_exactly():
  ex = shapes_examples(1)[0]
  out = pp.build("det_flip(1.0)")(dict(ex), np.random.default_rng(0))
  np.testing.assert_array_equal(out["image"], ex["image"][:, ::-1])
  np.testing.assert_array_equal(out["boxes"][:, [0, 2]], 96 - ex["boxes"][:, [2, 0]])
  np.testing.assert_array_equal(out["boxes"][:, [1, 3]], ex["boxes"][:, [1, 3]])
  kept = pp.build("det_flip(0.0)")(dict(ex), np.random.default_rng(0))
  np.testing.assert_array_equal(kept["image"], ex["image"])


def instances_example():
  """A 40 x 60 image with 5 instances (rectangles of known areas), the 4th a crowd region."""
  masks = np.zeros((5, 40, 60), np.uint8)
  rects = [(2, 2, 12, 12), (20, 5, 50, 35), (30, 2, 33, 5), (0, 0, 60, 40), (14, 20, 18, 30)]
  for m, (x1, y1, x2, y2) in zip(masks, rects):
    m[y1:y2, x1:x2] = 1
  masks[1, 10:20, 30:40] = 0  # a hole: the crop must show it
  return {"image": np.full((40, 60, 3), 128, np.uint8), "boxes": np.float32(rects), "masks": masks,
          "labels": np.int32([1, 2, 3, 4, 1]), "iscrowd": np.array([0, 0, 0, 1, 0], bool),
          "area": masks.sum((1, 2)).astype(np.float32), "image_id": 42}


def test_det_pack_gives_fixed_shapes_and_keeps_crowds_out_of_training(monkeypatch, caplog):
  out = pp.build("det_pack(8, mask_size=28)")(instances_example(), np.random.default_rng(0))
  assert set(out) == {"image", "boxes", "labels", "instance_valid", "iscrowd", "area", "masks", "image_id",
                      "orig_size", "image_size", "scale", "dropped"}
  assert out["boxes"].shape == (8, 4) and out["masks"].shape == (8, 28, 28) and out["masks"].dtype == np.float32
  np.testing.assert_array_equal(out["labels"], [1, 2, 3, 4, 1, 0, 0, 0])
  np.testing.assert_array_equal(out["instance_valid"], [1, 1, 1, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(out["iscrowd"], [0, 0, 0, 1, 0, 0, 0, 0])
  assert out["dropped"] == 0 and out["image_id"] == 42 and not out["boxes"][5:].any()
  np.testing.assert_array_equal(out["image_size"], [40, 60])
  # A rectangle fills its crop (the border cells blend in the outside, bilinearly); the hole shows.
  assert out["masks"][0, 2:-2, 2:-2].min() == 1.0 and out["masks"][0].mean() > 0.85
  # The hole: rows 10:20 and columns 30:40 of the 30 x 30 box at (20, 5), i.e. cells 5..13 x 9..19 of 28.
  assert out["masks"][1, 6:13, 10:18].max() == 0.0 and out["masks"][1, 1:4, 1:-1].min() == 1.0

  monkeypatch.setattr(detection, "_warned_dropped", False)
  fn = pp.build("det_pack(3, mask_size=0)")
  with caplog.at_level(logging.WARNING):
    out = fn(instances_example(), np.random.default_rng(0))
    fn(instances_example(), np.random.default_rng(0))
  assert "masks" not in out and out["dropped"] == 2
  # The three largest non-crowd boxes, in their order: 30 x 30, 10 x 10, 4 x 10; the crowd region goes.
  np.testing.assert_array_equal(out["labels"], [1, 2, 1])
  assert out["instance_valid"].all()
  assert sum("dropped" in r.message for r in caplog.records) == 1


def test_det_pack_after_augmentation_batches_with_grain():
  from inception_zoo.data import pipeline
  ds = datasets.get_dataset("shapes", "train")
  fn = pp.build("det_random_resize((96, 128), 160)|det_flip|normalize|det_pad(160)|det_pack(6, mask_size=14)")
  batch = next(pipeline.train_batches(ds.source, fn, global_batch=4, seed=0, num_threads=1))
  assert batch["image"].shape == (4, 160, 160, 3) and batch["masks"].shape == (4, 6, 14, 14)
  assert batch["boxes"].shape == (4, 6, 4) and batch["instance_valid"].shape == (4, 6)


def uncompressed_rle(mask):
  """COCO's uncompressed RLE: run lengths of the column-major pixels, starting with a run of zeros."""
  flat = mask.flatten(order="F")
  changes = np.flatnonzero(np.diff(flat)) + 1
  runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
  return {"size": list(mask.shape), "counts": ([0] + runs) if flat[0] else runs}


def write_coco(root, split="val", annotations=None, images_dir=None):
  from pycocotools import mask as mask_utils
  rng = np.random.default_rng(0)
  pixels = {10: rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), 20: rng.integers(0, 256, (30, 30), dtype=np.uint8)}
  img_dir = root / (images_dir or split)
  img_dir.mkdir(parents=True)
  for image_id, p in pixels.items():
    Image.fromarray(p).save(img_dir / f"{image_id}.png")
  disc = (np.add.outer((np.arange(40) - 20.0) ** 2, (np.arange(50) - 30.0) ** 2) <= 36).astype(np.uint8)
  crowd = np.zeros((40, 50), np.uint8)
  crowd[25:38, 2:20] = 1
  compressed = mask_utils.encode(np.asfortranarray(disc))
  compressed["counts"] = compressed["counts"].decode()
  anns = annotations if annotations is not None else [
      {"id": 1, "image_id": 10, "category_id": 7, "bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 0,
       "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]]},
      {"id": 2, "image_id": 10, "category_id": 3, "bbox": [24, 14, 13, 13], "area": float(disc.sum()), "iscrowd": 0,
       "segmentation": compressed},
      {"id": 3, "image_id": 10, "category_id": 7, "bbox": [2, 25, 18, 13], "area": float(crowd.sum()), "iscrowd": 1,
       "segmentation": uncompressed_rle(crowd)},
      {"id": 4, "image_id": 10, "category_id": 3, "bbox": [1, 1, 0, 5], "area": 0, "iscrowd": 0,
       "segmentation": [[1, 1, 1, 6, 1, 1]]},  # zero width: skipped, as torchvision does
  ]
  (root / "annotations").mkdir()
  (root / "annotations" / f"instances_{split}.json").write_text(json.dumps({
      "images": [{"id": 10, "file_name": "10.png", "height": 40, "width": 50},
                 {"id": 20, "file_name": "20.png", "height": 30, "width": 30}],
      "categories": [{"id": 7, "name": "kite"}, {"id": 3, "name": "car"}],
      "annotations": anns}))
  return pixels, disc, crowd


def test_coco_folder_reads_polygons_rle_and_crowds(tmp_path):
  pixels, disc, crowd = write_coco(tmp_path)
  ds = datasets.get_dataset("coco_json", "val", str(tmp_path))
  src = ds.source
  assert ds.num_classes == 3 and len(ds) == 2
  assert src.label_to_category_id == {1: 3, 2: 7} and src.class_names == ("background", "car", "kite")
  ex = src[0]
  assert ex["image_id"] == 10
  np.testing.assert_array_equal(pp.build("decode")(dict(ex), None)["image"], pixels[10])
  np.testing.assert_array_equal(ex["boxes"], [[5, 5, 25, 15], [24, 14, 37, 27], [2, 25, 20, 38]])
  np.testing.assert_array_equal(ex["labels"], [2, 1, 2])
  np.testing.assert_array_equal(ex["iscrowd"], [False, False, True])
  np.testing.assert_array_equal(ex["area"], [200, disc.sum(), crowd.sum()])
  assert ex["masks"].shape == (3, 40, 50) and ex["masks"].dtype == np.uint8
  np.testing.assert_array_equal(ex["masks"][1], disc)  # compressed RLE
  np.testing.assert_array_equal(ex["masks"][2], crowd)  # uncompressed RLE
  np.testing.assert_allclose(boxes_from_masks(ex["masks"][:1]), ex["boxes"][:1], atol=1)  # the polygon
  assert 180 <= ex["masks"][0].sum() <= 231
  empty = src[1]
  assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 30, 30)
  out = pp.build("decode|det_resize(60)|det_pad(80)|det_pack(4, mask_size=8)")(dict(ex), np.random.default_rng(0))
  np.testing.assert_array_equal(out["instance_valid"], [1, 1, 0, 0])
  gray = pp.build("decode|det_resize(60)|det_pad(80)|det_pack(4)")(dict(empty), np.random.default_rng(0))
  assert gray["image"].shape == (80, 80, 3) and not gray["instance_valid"].any()


def test_coco_folder_with_images_folder_layout_and_registered_layouts(tmp_path):
  write_coco(tmp_path / "a", images_dir="images/val")
  assert len(datasets.get_dataset("coco_json", "val", str(tmp_path / "a"))) == 2
  write_coco(tmp_path / "b", split="test2017", images_dir="JPEGImages")
  (tmp_path / "b" / "annotations" / "instances_test2017.json").rename(tmp_path / "b" / "annotations" / "test2017.json")
  detection.register_coco_json("hrsid_test", "annotations/{split}2017.json", ("JPEGImages",), masks=False)
  ds = datasets.get_dataset("hrsid_test", "test", str(tmp_path / "b"))
  assert "masks" not in ds.source[0] and len(ds.source[0]["labels"]) == 3
  with pytest.raises(UserError, match="no COCO annotation file"):
    datasets.get_dataset("coco_json", "train", str(tmp_path / "a"))


BAD = {
    "box outside": ({"bbox": [45, 0, 10, 10]}, "image 10 annotation 5: box .* outside the 50x40 image"),
    "degenerate polygon": ({"segmentation": [[1, 1, 5, 5]]}, "image 10 annotation 5: degenerate polygon of 2 points"),
    "unknown category": ({"category_id": 99}, "image 10 annotation 5: category id 99 is not in the categories"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_coco_annotations_name_file_image_and_annotation(tmp_path, case):
  change, message = BAD[case]
  ann = {"id": 5, "image_id": 10, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0,
         "segmentation": [[1, 1, 6, 1, 6, 6]], **change}
  write_coco(tmp_path, annotations=[ann])
  with pytest.raises(UserError, match="instances_val.json: " + message):
    datasets.get_dataset("coco_json", "val", str(tmp_path))


def write_voc(root, objects, classes_dir="Annotations", images_dir="JPEGImages", split="test"):
  (root / classes_dir).mkdir(parents=True)
  (root / images_dir).mkdir(parents=True)
  (root / "ImageSets" / "Main").mkdir(parents=True)
  (root / "ImageSets" / "Main" / f"{split}.txt").write_text("000005\n")
  Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(root / images_dir / "000005.jpg")
  objs = "".join(f"<object><name>{name}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
                 f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                 for name, d, b in objects)
  (root / classes_dir / "000005.xml").write_text(
      f"<annotation><filename>000005.jpg</filename><size><width>40</width><height>30</height><depth>3</depth>"
      f"</size>{objs}</annotation>")


def test_voc_folder_converts_one_based_boxes_and_keeps_difficult(tmp_path):
  write_voc(tmp_path, [("dog", 0, (1, 1, 10, 20)), ("person", 1, (5, 6, 40, 30))])
  ds = datasets.get_dataset("voc_xml", "test", str(tmp_path))
  assert ds.num_classes == 21 and len(ds) == 1 and ds.source.names == ["000005"]
  ex = ds.source[0]
  np.testing.assert_array_equal(ex["boxes"], [[0, 0, 10, 20], [4, 5, 40, 30]])  # x1 - 1, y1 - 1, x2, y2
  np.testing.assert_array_equal(ex["labels"], [12, 15])  # dog, person (1-based after background)
  np.testing.assert_array_equal(ex["difficult"], [False, True])
  np.testing.assert_array_equal(ex["area"], [200, 900])
  out = pp.build("decode|det_resize(60)|det_pad(80)|det_pack(4, ignore_difficult=True)")(dict(ex), None)
  np.testing.assert_array_equal(out["difficult"], [0, 1, 0, 0])
  np.testing.assert_array_equal(out["instance_valid"], [1, 0, 0, 0])

  write_voc(tmp_path / "dior", [("Expressway-Service-area", 0, (3, 3, 9, 9)), ("windmill", 0, (1, 1, 2, 2))],
            classes_dir="Annotations/Horizontal Bounding Boxes", images_dir="JPEGImages-test")
  ex = datasets.get_dataset("dior_xml", "test", str(tmp_path / "dior")).source[0]
  np.testing.assert_array_equal(ex["labels"], [8, 20])

  write_voc(tmp_path / "bad", [("unicorn", 0, (1, 1, 10, 20))])
  with pytest.raises(UserError, match="000005.xml: object 0 has class 'unicorn'"):
    datasets.get_dataset("voc_xml", "test", str(tmp_path / "bad"))
  write_voc(tmp_path / "outside", [("dog", 0, (1, 1, 50, 20))])
  with pytest.raises(UserError, match="000005.xml: object 0 box .* outside the 40x30 image"):
    datasets.get_dataset("voc_xml", "test", str(tmp_path / "outside"))


def test_tfds_coco_records_become_detection_examples(monkeypatch):
  import tensorflow_datasets as tfds
  from tensorflow_datasets.object_detection import coco
  from tensorflow_datasets.testing import mocking
  # tfds's COCO builder names tf.int64 in its features; TensorFlow is not a dependency of this stack.
  monkeypatch.setattr(coco, "tf", types.SimpleNamespace(int64=np.int64))

  def records(builder, *args, **kwargs):  # mock_data's records, but with equal-length object fields
    return list(mocking.RandomFakeGenerator(builder.info.features, 3, constant_dynamic_shape=True))

  with tfds.testing.mock_data(num_examples=3, as_data_source_fn=records):
    ds = datasets.get_dataset("tfds_det:coco/2017", "validation")
    raw = mocking.RandomFakeGenerator(tfds.builder("coco/2017").info.features, 3, constant_dynamic_shape=True)[0]
  assert ds.num_classes == 81 and len(ds) == 3
  assert ds.source.label_to_category_id[1] == 1 and ds.source.label_to_category_id[80] == 90
  ex = ds.source[0]
  h, w = raw["image"].shape[:2]
  ymin, xmin, ymax, xmax = raw["objects"]["bbox"].T
  np.testing.assert_allclose(ex["boxes"], np.stack([xmin * w, ymin * h, xmax * w, ymax * h], 1), rtol=1e-6)
  np.testing.assert_array_equal(ex["labels"], raw["objects"]["label"] + 1)
  np.testing.assert_array_equal(ex["iscrowd"], raw["objects"]["is_crowd"])
  np.testing.assert_array_equal(ex["area"], raw["objects"]["area"])
  assert ex["image_id"] == raw["image/id"] and "masks" not in ex
  out = pp.build("decode|det_resize(32)|det_pad(64)|det_pack(12)")(ex, np.random.default_rng(0))
  assert out["boxes"].shape == (12, 4) and out["image"].shape == (64, 64, 3) and "masks" not in out


def test_tfds_lvis_records_become_detection_examples_with_masks():
  import tensorflow_datasets as tfds
  from tensorflow_datasets.testing import mocking

  from inception_zoo.eval.coco import coco_dataset_from_source

  def records(builder, *args, **kwargs):  # equal-length object fields, one 0 / 255 mask per object
    out = list(mocking.RandomFakeGenerator(builder.info.features, 2, constant_dynamic_shape=True))
    for r in out:
      r["objects"]["segmentation"] = np.where(r["objects"]["segmentation"] > 127, 255, 0).astype(np.uint8)
    return out

  with tfds.testing.mock_data(num_examples=2, as_data_source_fn=records):
    ds = datasets.get_dataset("tfds_det:lvis", "validation")
    raw = records(tfds.builder("lvis"))[0]
  # tfds writes LVIS's category_id - 1: labels 1..1203 are the category ids again.
  assert ds.num_classes == 1204 and len(ds) == 2
  assert ds.source.label_to_category_id[1] == 1 and ds.source.label_to_category_id[1203] == 1203
  assert ds.source.class_names[1] == "aerosol_can" and len(ds.source.class_names) == 1204
  ex = ds.source[0]
  h, w = raw["image"].shape[:2]
  ymin, xmin, ymax, xmax = raw["objects"]["bbox"].T
  np.testing.assert_allclose(ex["boxes"], np.stack([xmin * w, ymin * h, xmax * w, ymax * h], 1), rtol=1e-6)
  np.testing.assert_array_equal(ex["labels"], raw["objects"]["label"] + 1)
  np.testing.assert_array_equal(ex["area"], raw["objects"]["area"])
  assert not ex["iscrowd"].any() and ex["image_id"] == raw["image/id"]
  assert ex["masks"].shape == (len(ex["labels"]), h, w) and ex["masks"].dtype == np.uint8
  np.testing.assert_array_equal(ex["masks"], raw["objects"]["segmentation"][..., 0] // 255)
  out = pp.build("decode|det_resize(32)|det_pad(64)|det_pack(12, mask_size=8)")(ex, np.random.default_rng(0))
  assert out["masks"].shape == (12, 8, 8) and out["image"].shape == (64, 64, 3)
  # The evaluation's ground truth: LVIS's categories, masks for segm AP.
  gt = coco_dataset_from_source(ds.source)
  assert len(gt["categories"]) == 1203 and gt["categories"][0] == {"id": 1, "name": "aerosol_can"}
  assert all("segmentation" in a for a in gt["annotations"]) and len(gt["annotations"]) == 2 * len(ex["labels"])
