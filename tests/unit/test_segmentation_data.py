"""Segmentation data: the pp ops keep image and label aligned, the crop's class-ratio rule, packing and
the label checks, the readers on small fake folders (ADE20K, Cityscapes, VOC aug) and the generated
shapes_seg / shapes_texture."""
import os

import numpy as np
import pytest
from PIL import Image

from inception_zoo.errors import UserError
from inception_zoo.data import datasets, pp
from inception_zoo.data import segmentation as seg

# Class colours at corners of the RGB cube (no three collinear, so a bilinear blend of two never lands on a
# third); black marks ignore, which seg_pad's zero padding keeps true.
PALETTE = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (255, 255, 255), 4: (255, 255, 0), 255: (0, 0, 0)}


def block_example(h=40, w=52, block=8, seed=0, image_id=3):
  """A label of random 8 px blocks (some ignore) and the image that paints each class in its colour."""
  rng = np.random.default_rng(seed)
  blocks = rng.choice([0, 1, 2, 3, 4, 255], size=(-(-h // block), -(-w // block)), p=[.2, .2, .2, .15, .15, .1])
  label = np.kron(blocks, np.ones((block, block), np.int64))[:h, :w].astype(np.uint8)
  lut = np.zeros((256, 3), np.uint8)
  for c, colour in PALETTE.items():
    lut[c] = colour
  return {"image": lut[label], "label": label, "image_id": np.int64(image_id)}


def assert_label_follows_colours(ex, min_fraction=0.4):
  """Every pixel whose colour is (within 3 levels) a class colour has that class: the maps are aligned."""
  image, label = ex["image"].astype(np.int64), ex["label"]
  assert label.shape == image.shape[:2] and label.dtype == np.uint8
  matched = np.zeros(label.shape, bool)
  for c, colour in PALETTE.items():
    near = np.abs(image - np.array(colour)).max(-1) <= 3
    np.testing.assert_array_equal(label[near], c)
    matched |= near
  assert matched.mean() >= min_fraction


@pytest.mark.parametrize("spec", [
    "seg_flip(1.0)", "seg_flip(1.0, direction='vertical')", "seg_random_crop((24, 30), 1.0)",
    "seg_random_crop(64, 1.0)", "seg_resize((80, 100))", "seg_resize((30, 20))", "seg_resize_keep_ratio((120, 60))",
    "seg_random_resize((100, 50), 0.5, 2.0)", "seg_random_resize((100, 50))|seg_random_crop(32)|seg_flip|seg_pad(64)",
    "seg_random_scale((0.5, 2.0))",
    "seg_photometric(0, (1, 1), (1, 1), 0)|seg_flip(1.0)|seg_pad((48, 60))"])
def test_geometric_ops_keep_image_and_label_aligned(spec):
  fn = pp.build(spec)
  for seed in range(4):
    out = fn(block_example(seed=seed), np.random.default_rng(seed))
    assert_label_follows_colours(out)
    np.testing.assert_array_equal(out["orig_size"], [40, 52])


def test_resizes_follow_mmcv_sizes():
  ex = block_example(h=30, w=50)
  # mmcv's rescale_size: factor min(120 / 50, 60 / 30) = 2 -> 60 x 100.
  assert pp.build("seg_resize_keep_ratio((120, 60))")(dict(ex), None)["image"].shape == (60, 100, 3)
  assert pp.build("seg_resize_keep_ratio((60, 120))")(dict(ex), None)["image"].shape == (60, 100, 3)
  # Random resize: the scale times a ratio in [0.5, 2], then keep-ratio: at ratio 1.5, (150, 75) and the factor
  # min(150 / 50, 75 / 30) = 2.5.
  class Ratio:
    def uniform(self, low, high):
      assert (low, high) == (0.5, 2.0)
      return 1.5

  assert pp.build("seg_random_resize((100, 50))")(dict(ex), Ratio())["label"].shape == (75, 125)
  sizes = {pp.build("seg_random_resize((100, 50))")(dict(ex), np.random.default_rng(s))["label"].shape
           for s in range(30)}
  assert len(sizes) > 10 and all(25 <= h <= 100 and abs(w / h - 5 / 3) < 0.05 for h, w in sizes)
  # CPS's random_scale: one of the ratios of the image's own size, sides truncated.
  sizes = {pp.build("seg_random_scale((0.5, 0.75, 1.75))")(dict(ex), np.random.default_rng(s))["label"].shape
           for s in range(20)}
  assert sizes == {(15, 25), (22, 37), (52, 87)}


def test_random_crop_honours_cat_max_ratio_without_counting_ignore():
  # Top half ignore; bottom half class 1 in the first 16 columns, class 0 elsewhere. A 32 x 32 crop passes
  # mmseg's rule (>= 2 classes, none >= 75% of the labelled pixels) only if it starts left of column 8
  # and below row 0; counting ignore as a class would also pass many one-class crops.
  label = np.full((64, 64), 255, np.uint8)
  label[32:] = 0
  label[32:, :16] = 1
  ex = {"image": np.zeros((64, 64, 3), np.uint8), "label": label, "image_id": 0}

  def passes(crop):
    values, counts = np.unique(crop[crop != 255], return_counts=True)
    return len(values) > 1 and counts.max() / counts.sum() < 0.75

  def rate(ratio):
    fn = pp.build(f"seg_random_crop(32, {ratio})")
    return np.mean([passes(fn(dict(ex), np.random.default_rng(s))["label"]) for s in range(100)])

  assert rate(1.0) < 0.4 and rate(0.75) > 0.85


def test_crop_larger_than_the_image_and_pad_fill_with_ignore():
  ex = block_example(h=40, w=52)
  out = pp.build("seg_random_crop(64)|normalize|seg_pad(64)|seg_pack")(ex, np.random.default_rng(0))
  assert out["image"].shape == (64, 64, 3) and out["label"].shape == (64, 64)
  np.testing.assert_array_equal(out["image_size"], [40, 52])
  assert (out["label"][40:] == 255).all() and (out["label"][:, 52:] == 255).all()
  assert (out["image"][40:] == 0).all()  # after normalize: the mean colour
  np.testing.assert_array_equal(out["label"][:40, :52], ex["label"])


def test_pack_gives_fixed_shapes_and_fills_missing_labels():
  fn = pp.build("seg_resize(48)|normalize|seg_pad(64)|seg_pack")
  out = fn(block_example(), np.random.default_rng(0))
  assert set(out) == {"image", "label", "image_size", "orig_size", "image_id"}
  assert out["image"].dtype == np.float32 and out["image"].shape == (64, 64, 3)
  assert out["label"].dtype == np.int32 and out["label"].shape == (64, 64)
  assert out["image_size"].dtype == np.int32 and out["orig_size"].dtype == np.int32
  np.testing.assert_array_equal(out["image_size"], [48, 48])
  np.testing.assert_array_equal(out["orig_size"], [40, 52])
  assert out["image_id"] == 3
  unlabelled = block_example()
  del unlabelled["label"]
  out = pp.build("seg_random_resize((64, 48))|seg_random_crop(32)|seg_flip|seg_photometric|seg_pad(32)|seg_pack")(
      unlabelled, np.random.default_rng(1))
  assert out["label"].shape == (32, 32) and (out["label"] == 255).all()


@pytest.mark.parametrize("spec", ["seg_resize(8)", "seg_resize_keep_ratio(8)", "seg_random_resize((8, 8))",
                                  "seg_random_scale",
                                  "seg_random_crop(4)", "seg_flip", "seg_photometric", "seg_pad(16)", "seg_pack"])
def test_every_op_rejects_a_label_of_another_size(spec):
  ex = {"image": np.zeros((10, 13, 3), np.uint8), "label": np.zeros((10, 12), np.uint8), "image_id": np.int64(7)}
  with pytest.raises(UserError, match=r"image 7: label map of shape \(10, 12\) does not match the 10x13"):
    pp.build(spec)(ex, np.random.default_rng(0))


def test_op_errors_name_the_cause():
  with pytest.raises(UserError, match="still encoded"):
    pp.build("seg_flip")({"image": b"\x89PNG", "image_id": 1}, np.random.default_rng(0))
  with pytest.raises(UserError, match="before normalize"):
    pp.build("normalize|seg_photometric")(block_example(), np.random.default_rng(0))
  with pytest.raises(UserError, match="larger than the 32x32 canvas"):
    pp.build("seg_pad(32)")(block_example(), np.random.default_rng(0))
  with pytest.raises(UserError, match="direction"):
    pp.build("seg_flip(direction='diagonal')")


def test_check_labels_names_value_and_image():
  batch = {"label": np.zeros((3, 4, 5), np.int32), "image_id": np.array([10, 11, 12])}
  batch["label"][1, 2, 3] = 255
  seg.check_labels(batch, 150)  # ignore is fine
  batch["label"][2, 1, 4] = 150
  with pytest.raises(UserError, match=r"label value 150 at pixel \(1, 4\) of image 12 is not a class id 0..149"):
    seg.check_labels(batch, 150)
  with pytest.raises(UserError, match="label value -1"):
    seg.check_labels(np.array([[0, -1]]), 3)
  seg.check_labels(np.array([[0, 2, 255]], np.uint8), 3)


def test_photometric_is_mmsegs_distortion():
  # OpenCV's uint8 HSV (values from cv2 4.10's cvtColor), and a round trip within its quantisation.
  rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [12, 200, 77], [250, 30, 140], [3, 2, 1],
                   [90, 91, 200]]], np.uint8)
  cv2_hsv = [[0, 255, 255], [60, 255, 255], [120, 255, 255], [0, 0, 128], [70, 240, 200], [165, 224, 250],
             [15, 170, 3], [120, 140, 200]]
  np.testing.assert_array_equal(seg.rgb_to_hsv(rgb)[0], cv2_hsv)
  np.testing.assert_array_equal(seg.hsv_to_rgb(seg.rgb_to_hsv(rgb))[0, :4], rgb[0, :4])
  image = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
  err = np.abs(seg.hsv_to_rgb(seg.rgb_to_hsv(image)).astype(int) - image)
  assert err.max() <= 8 and err.mean() < 1.5
  ex = block_example()
  fn = pp.build("seg_photometric")
  outs = [fn(dict(ex), np.random.default_rng(s)) for s in range(8)]
  assert all(o["image"].dtype == np.uint8 and o["image"].shape == ex["image"].shape for o in outs)
  assert all((o["label"] == ex["label"]).all() for o in outs)
  assert sum(not np.array_equal(o["image"], ex["image"]) for o in outs) >= 6
  np.testing.assert_array_equal(fn(dict(ex), np.random.default_rng(3))["image"], outs[3]["image"])
  # Brightness alone: + delta, clipped and truncated as mmseg's convert.
  bright = pp.build("seg_photometric(32, (1, 1), (1, 1), 0)")
  grey = {"image": np.full((4, 4, 3), 100, np.uint8), "image_id": 0}
  values = {int(bright(dict(grey), np.random.default_rng(s))["image"][0, 0, 0]) for s in range(40)}
  assert 100 in values and min(values) >= 68 and max(values) <= 131 and len(values) > 5


# --- readers -------------------------------------------------------------------------------------------


def write_image(path, h=6, w=8, seed=0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)).save(path)


def write_label(path, label, palette=False):
  """A grey PNG of the ids, or a palette PNG whose indices are the ids (VOC's, with made-up colours)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  label = np.asarray(label, np.uint8)
  img = Image.frombytes("P" if palette else "L", label.shape[::-1], label.tobytes())
  if palette:
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
  img.save(path)


def decode_pack(source, i):
  return pp.build("decode|seg_pack")(source[i], np.random.default_rng(0))


def test_ade20k_folder_reduces_the_zero_label(tmp_path):
  root = tmp_path / "ADEChallengeData2016"
  label = np.array([[0, 1, 150, 2]] * 6, np.uint8).repeat(2, 1)
  for split, names in (("training", ["ADE_train_2", "ADE_train_1"]), ("validation", ["ADE_val_1"])):
    for n in names:
      write_image(str(root / "images" / split / f"{n}.jpg"))
      write_label(str(root / "annotations" / split / f"{n}.png"), label)
  for data_dir in (str(tmp_path), str(root)):
    train = datasets.get_dataset("ade20k", "train", data_dir)
    assert train.num_classes == 150 and len(train) == 2 and train.source.names == ["ADE_train_1", "ADE_train_2"]
    assert len(train.source.class_names) == 150 and train.source.class_names[0] == "wall"
  ex = train.source[1]
  assert isinstance(ex["image"], bytes) and ex["image_id"] == 1
  np.testing.assert_array_equal(ex["label"][0], [255, 255, 0, 0, 149, 149, 1, 1])
  out = decode_pack(train.source, 0)
  assert out["image"].shape == (6, 8, 3) and out["label"].shape == (6, 8)
  assert len(datasets.get_dataset("ade20k", "validation", str(tmp_path))) == 1
  os.remove(root / "annotations" / "validation" / "ADE_val_1.png")
  with pytest.raises(UserError, match="ADE_val_1.png"):
    datasets.get_dataset("ade20k", "validation", str(tmp_path))
  with pytest.raises(UserError, match="splits 'train' and 'validation'"):
    datasets.get_dataset("ade20k", "val", str(tmp_path))
  with pytest.raises(UserError, match="no folder"):
    datasets.get_dataset("ade20k", "train", str(tmp_path / "elsewhere"))


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
  ids = np.array([[0, 7, 8, 26, 33, 34, 9, 24]] * 6, np.uint8)
  for city, n in (("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")):
    write_image(str(tmp_path / "leftImg8bit" / "train" / city / f"{n}_leftImg8bit.png"))
    write_label(str(tmp_path / "gtFine" / "train" / city / f"{n}_gtFine_labelIds.png"), ids)
    write_label(str(tmp_path / "gtFine" / "train" / city / f"{n}_gtFine_color.png"), ids)
  # A labelTrainIds file, where it exists, is read as it is.
  write_label(str(tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000313_gtFine_labelTrainIds.png"),
              np.full((6, 8), 5, np.uint8))
  train = datasets.get_dataset("cityscapes", "train", str(tmp_path))
  assert train.num_classes == 19 and len(train) == 2 and train.source.names[0] == "aachen_000000_000019"
  np.testing.assert_array_equal(train.source[0]["label"][0], [255, 0, 1, 13, 18, 255, 255, 11])
  assert (train.source[1]["label"] == 5).all()
  assert seg.CITYSCAPES_LUT[[24, 25, 31, 32]].tolist() == [11, 12, 16, 17]
  assert decode_pack(train.source, 0)["label"].shape == (6, 8)
  with pytest.raises(UserError, match=r"splits found: \['train'\]"):
    datasets.get_dataset("cityscapes", "val", str(tmp_path))
  os.remove(tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png")
  with pytest.raises(UserError, match="aachen_000000_000019_gtFine_labelTrainIds.png nor labelIds"):
    datasets.get_dataset("cityscapes", "train", str(tmp_path))


def test_cityscapes_partitions_follow_cps_lists(tmp_path):
  # Each image's label is one id: road (7), sidewalk (8), car (26).
  for k, (n, label_id) in enumerate((("aachen_000000_000019", 7), ("aachen_000001_000019", 8),
                                     ("jena_000078_000019", 26))):
    city = n.split("_")[0]
    write_image(str(tmp_path / "leftImg8bit" / "train" / city / f"{n}_leftImg8bit.png"), seed=k)
    write_label(str(tmp_path / "gtFine" / "train" / city / f"{n}_gtFine_labelIds.png"), np.full((6, 8), label_id))
  lists = tmp_path / "config_new" / "subset_train"
  os.makedirs(lists)

  def line(n):  # CPS's flattened layout, which the reader maps back to leftImg8bit/train/<city>/
    return f"/images/train/{n}.png\t/segmentation/train/{n}_gtFine.png\n"
  (lists / "train_aug_labeled_1-8.txt").write_text(line("jena_000078_000019") + line("aachen_000001_000019"))
  (lists / "train_aug_unlabeled_1-8.txt").write_text(line("aachen_000000_000019"))
  os.makedirs(tmp_path / "subset_train")
  (tmp_path / "subset_train" / "train_aug_labeled_1-16.txt").write_text(line("aachen_000000_000019"))
  train = datasets.get_dataset("cityscapes", "train", str(tmp_path)).source
  labeled = datasets.get_dataset("cityscapes", "labeled_1-8", str(tmp_path))
  assert labeled.num_classes == 19 and labeled.source.names == ["jena_000078_000019", "aachen_000001_000019"]
  assert labeled.source.class_names == train.class_names
  for i, n in enumerate(labeled.source.names):
    ex, ref = labeled.source[i], train[train.names.index(n)]
    assert ex["image"] == ref["image"] and ex["image_id"] == i
    np.testing.assert_array_equal(ex["label"], ref["label"])
  assert (labeled.source[0]["label"] == 13).all() and (labeled.source[1]["label"] == 1).all()  # train ids
  assert datasets.get_dataset("cityscapes", "labeled_1-16", str(tmp_path)).source.names == ["aachen_000000_000019"]
  # Unlabelled examples carry no label, as voc_aug's, so their gtFine files need not exist.
  os.remove(tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png")
  unlabeled = datasets.get_dataset("cityscapes", "unlabeled_1-8", str(tmp_path)).source
  assert unlabeled.names == ["aachen_000000_000019"] and "label" not in unlabeled[0]
  assert unlabeled[0]["image"] == (tmp_path / "leftImg8bit" / "train" / "aachen" /
                                   "aachen_000000_000019_leftImg8bit.png").read_bytes()
  assert (decode_pack(unlabeled, 0)["label"] == 255).all()
  with pytest.raises(UserError, match=r"train_aug_labeled_1-4.txt.*partitions found: \['labeled_1-16', "
                                      r"'labeled_1-8', 'unlabeled_1-8'\]"):
    datasets.get_dataset("cityscapes", "labeled_1-4", str(tmp_path))
  (lists / "train_aug_labeled_1-8.txt").write_text(line("jena_000078_000019") + line("ulm_000001_000019"))
  with pytest.raises(UserError, match=r"train_aug_labeled_1-8.txt:2: no image ulm_000001_000019_leftImg8bit.png"):
    datasets.get_dataset("cityscapes", "labeled_1-8", str(tmp_path))


def test_voc_aug_reads_cps_lists_partitions_and_palette_labels(tmp_path):
  root = tmp_path / "pascal_voc"
  label = np.array([[0, 15, 255, 20]] * 6, np.uint8).repeat(2, 1)
  names = ["2007_000032", "2007_000039", "2007_000063"]
  for n in names:
    write_image(str(root / "train_aug" / "image" / f"{n}.jpg"))
    write_label(str(root / "train_aug" / "label" / f"{n}.png"), label, palette=True)
  write_image(str(root / "val" / "image" / "2007_000033.jpg"))
  write_label(str(root / "val" / "label" / "2007_000033.png"), label, palette=True)
  (root / "train_aug.txt").write_text("\n".join(names) + "\n")
  (root / "val.txt").write_text("2007_000033\n")
  os.makedirs(root / "subset_train_aug")
  (root / "subset_train_aug" / "train_aug_labeled_1-8.txt").write_text(
      "2007_000032\n/train_aug/image/2007_000039.jpg\t/train_aug/label/2007_000039.png\n")
  (root / "subset_train_aug" / "train_aug_unlabeled_1-8.txt").write_text("2007_000063\n")
  assert Image.open(root / "train_aug" / "label" / "2007_000032.png").mode == "P"
  for data_dir in (str(tmp_path), str(root)):
    train = datasets.get_dataset("voc_aug", "train", data_dir)
    assert train.num_classes == 21 and len(train) == 3 and train.source.class_names[15] == "person"
  np.testing.assert_array_equal(train.source[2]["label"][0], [0, 0, 15, 15, 255, 255, 20, 20])
  assert len(datasets.get_dataset("voc_aug", "val", str(tmp_path))) == 1
  labeled = datasets.get_dataset("voc_aug", "labeled_1-8", str(tmp_path)).source
  assert labeled.names == ["2007_000032", "2007_000039"]
  np.testing.assert_array_equal(labeled[1]["label"], train.source[1]["label"])
  unlabeled = datasets.get_dataset("voc_aug", "unlabeled_1-8", str(tmp_path)).source
  assert len(unlabeled) == 1 and "label" not in unlabeled[0]
  np.testing.assert_array_equal(seg.load_label(labeled[0]), labeled[0]["label"])
  with pytest.raises(UserError, match="image 0 has no label"):
    seg.load_label(unlabeled[0])
  assert (decode_pack(unlabeled, 0)["label"] == 255).all()
  with pytest.raises(UserError, match="train_aug_labeled_1-16.txt"):
    datasets.get_dataset("voc_aug", "labeled_1-16", str(tmp_path))
  with pytest.raises(UserError, match="'labeled_<p>'"):
    datasets.get_dataset("voc_aug", "trainval", str(tmp_path))
  os.remove(root / "train_aug" / "label" / "2007_000063.png")
  with pytest.raises(UserError, match="2007_000063.png"):
    datasets.get_dataset("voc_aug", "train", str(tmp_path))
  Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "train_aug" / "label" / "2007_000063.png")
  with pytest.raises(UserError, match="PIL mode RGB"):
    datasets.get_dataset("voc_aug", "train", str(tmp_path)).source[2]


# --- generated shapes ----------------------------------------------------------------------------------


def test_shapes_seg_is_deterministic_and_agrees_with_the_instance_masks():
  test = datasets.get_dataset("shapes_seg", "test")
  assert test.num_classes == 5 and len(test) == 200 and len(datasets.get_dataset("shapes_seg", "train")) == 2000
  a, b = test.source[5], test.source[5]
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["image"], datasets.get_dataset("shapes_seg", "train").source[5]["image"])
  detection_source = datasets.get_dataset("shapes", "test").source
  stray = 0
  for i in range(20):
    ex, scene = test.source[i], detection_source[i]
    np.testing.assert_array_equal(ex["image"], scene["image"])  # the same scenes as detection's
    assert ex["label"].shape == (96, 96) and ex["label"].dtype == np.uint8 and ex["label"].max() <= 4
    for mask, cls in zip(scene["masks"].astype(bool), scene["labels"]):
      assert (ex["label"][mask] == cls).all()
    covered = scene["masks"].any(0)
    assert (ex["label"][~covered] == 0).sum() >= (~covered).sum() - 20  # only shapes under min_area differ
    stray += (ex["label"][~covered] > 0).sum()
  assert stray < 50
  with pytest.raises(UserError, match="splits"):
    datasets.get_dataset("shapes_seg", "val")
  small = seg.shapes_seg_dataset("train", size=(48, 64), num_train=3)
  assert len(small) == 3 and small.source[0]["label"].shape == (48, 64)


def test_shapes_partitions_are_every_kth_train_scene_and_the_rest():
  train = seg.shapes_texture_dataset("train", num_train=64).source
  labeled = seg.shapes_texture_dataset("labeled_1-16", num_train=64)
  unlabeled = seg.shapes_texture_dataset("unlabeled_1-16", num_train=64).source
  assert labeled.num_classes == 5 and labeled.source.class_names == train.class_names == unlabeled.class_names
  assert labeled.source.names == ["0", "16", "32", "48"] and len(unlabeled) == 60
  assert not set(labeled.source.names) & set(unlabeled.names)
  assert sorted(labeled.source.names + unlabeled.names, key=int) == train.names
  for source, labelled in ((labeled.source, True), (unlabeled, False)):
    for i in range(0, len(source), 7):
      ex, ref = source[i], train[int(source.names[i])]
      assert ex["image_id"] == i and ("label" in ex) == labelled
      np.testing.assert_array_equal(ex["image"], ref["image"])
      if labelled:
        np.testing.assert_array_equal(ex["label"], ref["label"])
  assert (pp.build("seg_pack")(unlabeled[0], None)["label"] == 255).all()
  assert seg.shapes_seg_dataset("labeled_1-1", num_train=3).source.names == ["0", "1", "2"]
  with pytest.raises(UserError, match="'unlabeled_1-1' is empty"):
    seg.shapes_seg_dataset("unlabeled_1-1", num_train=3)
  for bad in ("labeled_1-0", "labeled_2-8", "labeled"):
    with pytest.raises(UserError, match=r"splits 'train', 'test', 'labeled_1-<k>' and 'unlabeled_1-<k>'.*got"):
      datasets.get_dataset("shapes_seg", bad)


def test_shapes_texture_labels_follow_texture_not_colour():
  def pixels(name, n=40):
    src = datasets.get_dataset(name, "train").source
    exs = [src[i] for i in range(n)]
    return np.concatenate([e["image"].reshape(-1, 3) for e in exs]), np.concatenate([e["label"].ravel() for e in exs])

  texture = datasets.get_dataset("shapes_texture", "test")
  assert texture.num_classes == 5 and texture.source.class_names[1] == "horizontal stripes"
  np.testing.assert_array_equal(texture.source[3]["image"], texture.source[3]["image"])
  results = {}
  for name in ("shapes_seg", "shapes_texture"):
    pix, lab = pixels(name)
    fg, ok = (lab > 0) & (lab != 255), lab != 255
    # A colour-only rule (an 8x8x8 colour histogram per side, fitted on the first half of the pixels) for
    # foreground vs background, scored on the second half by balanced accuracy.
    code = (pix[:, 0] // 32) * 64 + (pix[:, 1] // 32) * 8 + pix[:, 2] // 32
    half = len(code) // 2
    hist_fg = np.bincount(code[:half][fg[:half]], minlength=512) + 1
    hist_bg = np.bincount(code[:half][~fg[:half] & ok[:half]], minlength=512) + 1
    pred = (hist_fg / hist_fg.sum())[code[half:]] > (hist_bg / hist_bg.sum())[code[half:]]
    t, o = fg[half:], ok[half:]
    results[name] = 0.5 * (pred[t & o].mean() + (~pred[~t & o]).mean())
    if name == "shapes_texture":
      assert set(np.unique(lab)) <= {0, 1, 2, 3, 4, 255} and all((lab == c).sum() > 1000 for c in range(1, 5))
      # The same colour rule for the class of a foreground pixel: chance (1/4).
      hists = np.stack([np.bincount(code[:half][lab[:half] == c], minlength=512) + 1 for c in range(1, 5)])
      guess = (hists / hists.sum(1, keepdims=True))[:, code[half:]].argmax(0) + 1
      assert (guess[t & o] == lab[half:][t & o]).mean() < 0.35
  assert results["shapes_seg"] > 0.75 and results["shapes_texture"] < 0.65, results
  # A class's texture is what its name says: on one object, horizontal stripes (class 1) are constant along
  # each row and vertical ones (class 2) along each column, in two colours.
  checked = set()
  for k in range(20):
    ex, scene = texture.source[k], texture.source.scenes[k]
    for mask in scene["masks"].astype(bool):
      cls = int(ex["label"][mask][0])
      if cls in (1, 2) and mask.sum() > 150:
        along = np.argwhere(mask)[:, 0 if cls == 1 else 1]
        colours = ex["image"][mask]
        assert len(np.unique(colours, axis=0)) == 2
        assert all(len(np.unique(colours[along == v], axis=0)) == 1 for v in np.unique(along))
        checked.add(cls)
  assert checked == {1, 2}


def test_pipeline_batches_shapes_seg_with_grain():
  from inception_zoo.data.pipeline import eval_batches
  source = seg.shapes_seg_dataset("test", num_test=5).source
  fn = pp.build("seg_resize_keep_ratio((128, 64))|normalize|seg_pad(64)|seg_pack")
  batch = next(eval_batches(source, fn, global_batch=4, num_threads=1))
  assert batch["image"].shape == (4, 64, 64, 3) and batch["label"].shape == (4, 64, 64)
  seg.check_labels(batch, 5)
  np.testing.assert_array_equal(batch["orig_size"], [[96, 96]] * 4)
