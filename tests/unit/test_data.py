"""Preprocessing ops, the deterministic per-host pipeline, and the tfds loader on mocked ImageNet."""
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from inception_zoo import UserError
from inception_zoo.data import datasets, pipeline, pp


def image(h=40, w=60):
  return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_ops_compose_from_a_string():
  fn = pp.build("inception_crop(32, return_box=True)|flip_lr(p=1.0)|value_range(-1, 1)")
  out = fn({"image": image(), "label": 3}, np.random.default_rng(1))
  assert out["image"].shape == (32, 32, 3) and out["image"].dtype == np.float32
  assert -1.0 <= out["image"].min() and out["image"].max() <= 1.0
  assert out["label"] == 3


def test_inception_crop_box_locates_the_crop():
  src = image(50, 80)
  rng = np.random.default_rng(7)
  out = pp.build("inception_crop((50, 80), area_min=20, area_max=30, method='nearest', return_box=True)")(
      {"image": src}, rng)
  ymin, xmin, ymax, xmax = out["box"]
  area = (ymax - ymin) * (xmax - xmin)
  assert 0.19 <= area <= 0.31
  crop = src[round(ymin * 50):round(ymax * 50), round(xmin * 80):round(xmax * 80)]
  # Nearest resize of that crop back to its own size is the crop itself: the box is exact.
  again = pp.build("resize((50, 80), method='nearest')")({"image": crop}, rng)["image"]
  np.testing.assert_array_equal(again, out["image"])


def test_flip_mirrors_the_box():
  out = pp.build("flip_lr(p=1.0)")({"image": image(), "box": np.array([0.1, 0.2, 0.5, 0.6])},
                                   np.random.default_rng(0))
  np.testing.assert_allclose(out["box"], [0.1, 0.4, 0.5, 0.8])


def test_value_range_maps_the_ends():
  out = pp.build("value_range(-1, 1)")({"image": np.array([[[0, 255, 51]]], np.uint8)}, None)
  np.testing.assert_allclose(out["image"], [[[-1.0, 1.0, -0.6]]], atol=1e-6)


def test_normalize_matches_torchvision():
  """timm's ResNets / MobileNets / EfficientNets expect torchvision's ToTensor + Normalize."""
  from torchvision.transforms import functional as tvf
  image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
  out = pp.build("normalize")({"image": image}, None)["image"]
  ref = tvf.normalize(tvf.to_tensor(image), pp.IMAGENET_MEAN, pp.IMAGENET_STD)
  np.testing.assert_allclose(out, ref.permute(1, 2, 0).numpy(), atol=1e-6)


def test_unknown_op_and_bad_syntax_are_one_line_errors():
  with pytest.raises(UserError, match=r"unknown preprocessing op 'inception_crp'; did you mean 'inception_crop'\?"):
    pp.build("decode|inception_crp(299)")
  with pytest.raises(UserError, match="cannot parse preprocessing op"):
    pp.build("resize(299")
  with pytest.raises(UserError, match="bad arguments for preprocessing op 'resize"):
    pp.build("resize(1, 2, 3, 4)")


def test_digits_split_is_fixed_and_stratified():
  train, test = datasets.get_dataset("digits", "train"), datasets.get_dataset("digits", "test")
  assert (len(train), len(test), train.num_classes) == (1437, 360, 10)
  labels = np.array([test.source[i]["label"] for i in range(len(test))])
  assert np.bincount(labels).min() >= 35
  assert train.source[0]["image"].shape == (8, 8, 1) and train.source[0]["image"].dtype == np.uint8


def test_unknown_dataset_suggests_the_closest():
  with pytest.raises(UserError, match=r"unknown dataset 'digit'; did you mean 'digits'\?"):
    datasets.get_dataset("digit", "train")


PP = pp.build("gray_to_rgb|random_crop(8, pad=1)|value_range(0, 1)")


def take(it, n):
  return [next(it) for _ in range(n)]


def test_train_batches_resume_at_any_batch():
  src = datasets.get_dataset("digits", "train").source
  straight = take(pipeline.train_batches(src, PP, global_batch=100, seed=3), 20)  # crosses an epoch
  resumed = take(pipeline.train_batches(src, PP, global_batch=100, seed=3, start_batch=13), 7)
  for a, b in zip(straight[13:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  # Each epoch is a new permutation of every example.
  first_epoch = np.concatenate([b["label"] for b in straight[:14]])
  assert not np.array_equal(straight[0]["label"], straight[15]["label"])
  assert len(first_epoch) == 1400


def test_hosts_read_disjoint_rows_of_the_same_global_batch(monkeypatch):
  src = datasets.get_dataset("digits", "train").source
  whole = take(pipeline.train_batches(src, PP, global_batch=64, seed=0), 3)
  parts = []
  for p in range(4):
    monkeypatch.setattr(jax, "process_index", lambda p=p: p)
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    parts.append(take(pipeline.train_batches(src, PP, global_batch=64, seed=0), 3))
  for k in range(3):
    np.testing.assert_array_equal(np.concatenate([parts[p][k]["image"] for p in range(4)]),
                                  whole[k]["image"])


def test_eval_batches_cover_every_example_once():
  src = datasets.get_dataset("digits", "test").source
  batches = list(pipeline.eval_batches(src, PP, global_batch=128))
  assert len(batches) == 3
  mask = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])[mask > 0]
  assert mask.sum() == 360
  np.testing.assert_array_equal(labels, [src[i]["label"] for i in range(360)])


def test_batch_larger_than_dataset_is_refused():
  with pytest.raises(UserError, match="larger than the dataset"):
    pipeline.train_batches(datasets.ArraySource(np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4)),
                           PP, global_batch=8, seed=0)


def test_tfds_imagenet_loader_on_mock_data():
  fn = pp.build("decode|inception_crop(75)|flip_lr|value_range(-1, 1)")
  with tfds.testing.mock_data(num_examples=24):
    ds = datasets.get_dataset("tfds:imagenet2012", "train")
    assert ds.num_classes == 1000 and len(ds) == 24
    batch = next(pipeline.train_batches(ds.source, fn, global_batch=8, seed=0))
  assert set(batch) == {"image", "label"}  # not ImageNet's 'file_name' strings, which no device holds
  assert batch["image"].shape == (8, 75, 75, 3) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (8,) and batch["label"].max() < 1000


def test_image_folder_reads_classes_of_every_split_and_decodes(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  pixels = {}
  for split, classes in (("imagenet21k_train", ("n01", "n02", "n03")), ("imagenet21k_val", ("n01", "n03"))):
    for c in classes:
      (tmp_path / split / c).mkdir(parents=True)
      for k in range(2):
        pixels[split, c, k] = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        Image.fromarray(pixels[split, c, k]).save(tmp_path / split / c / f"{k}.png")
  (tmp_path / "imagenet21k_train" / "n01" / "notes.txt").write_text("not an image")
  val = datasets.get_dataset("folder", "imagenet21k_val", str(tmp_path))
  assert val.num_classes == 3 and len(val) == 4  # n03 keeps label 2 though val has no n02
  assert [val.source[i]["label"] for i in range(4)] == [0, 0, 2, 2]
  decoded = pp.build("decode")(val.source[3], None)["image"]
  np.testing.assert_array_equal(decoded, pixels["imagenet21k_val", "n03", 1])  # PNG: lossless
  assert len(datasets.get_dataset("folder", "imagenet21k_train", str(tmp_path))) == 6
  with pytest.raises(UserError, match="no directory"):
    datasets.get_dataset("folder", "validation", str(tmp_path))
  with pytest.raises(UserError, match="data_dir"):
    datasets.get_dataset("folder", "train", None)
