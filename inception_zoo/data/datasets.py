"""Random-access data sources by name.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes; no download),
  split once into 1,437 train / 360 test images, stratified with a fixed seed.
- `tfds:<name>` (e.g. `tfds:imagenet2012`): a prepared TensorFlow Datasets dataset read with
  `tfds.data_source` (ArrayRecord, random access, no TensorFlow needed).
- `folder`: image files in `data_dir/<split>/<class>/` (torchvision's ImageFolder layout, e.g.
  ImageNet-21K-P's `imagenet21k_train/<wnid>/*.JPEG`); classes are the sorted class directories of all
  splits, the images stay encoded until the `decode` pp op.

A source has `len()` and `[i] -> {"image": HWC uint8, "label": int}`.
"""
import dataclasses
import functools
import os
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from inception_zoo.errors import UserError, did_you_mean


@dataclasses.dataclass(frozen=True)
class Dataset:
  source: Any
  num_classes: int

  def __len__(self):
    return len(self.source)


class ArraySource:
  """In-memory images and labels as a grain-compatible random-access source."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    return {"image": self.images[i], "label": int(self.labels[i])}


@functools.lru_cache(maxsize=None)
def _digits_split(seed: int = 0, test_fraction: float = 0.2):
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  digits = load_digits()
  # 0..16 grey levels -> uint8 0..255, one channel.
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  return train_test_split(images, digits.target, test_size=test_fraction, random_state=seed,
                          stratify=digits.target)


def digits(split: str, data_dir: Optional[str] = None) -> Dataset:
  del data_dir
  x_train, x_test, y_train, y_test = _digits_split()
  if split not in ("train", "test"):
    raise UserError(f"dataset 'digits' has splits 'train' and 'test'; got '{split}'")
  return Dataset(ArraySource(*((x_train, y_train) if split == "train" else (x_test, y_test))), 10)


def digits_arrays(split: str, *, flat: bool = True):
  """The digits split as arrays for full-batch methods: float32 pixels in [0, 1] (flattened to 64 values,
  or 8x8x1 images), int32 labels."""
  source = digits(split).source
  images = source.images.astype(np.float32) / 255.0
  return (images.reshape(len(images), -1) if flat else images), source.labels.astype(np.int32)


class ImageLabelSource:
  """A source's examples cut to the contract above: tfds records also carry strings ('file_name' of
  ImageNet, 'id' of CIFAR) that no device array can hold."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    example = self.source[i]
    return {"image": example["image"], "label": example["label"]}


def tfds_source(name: str, split: str, data_dir: Optional[str] = None) -> Dataset:
  import tensorflow_datasets as tfds
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    num_classes = tfds.builder(name, data_dir=data_dir).info.features["label"].num_classes
  except Exception as e:  # tfds raises several types (not found, not prepared, bad split)
    raise UserError(f"cannot read tfds dataset '{name}' split '{split}' (prepare it with "
                    f"`tfds build {name}`; ImageNet needs --manual_dir): {str(e).splitlines()[0]}")
  return Dataset(ImageLabelSource(source), num_classes)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what PIL decodes


class FolderSource:
  """Encoded image files and their labels, read on access."""

  def __init__(self, files, labels):
    self.files, self.labels = files, labels

  def __len__(self):
    return len(self.files)

  def __getitem__(self, i):
    with open(self.files[i], "rb") as f:
      return {"image": f.read(), "label": self.labels[i]}


def image_folder(split: str, data_dir: Optional[str] = None) -> Dataset:
  root = os.path.join(data_dir or "", split)
  if not data_dir or not os.path.isdir(root):
    raise UserError(f"dataset 'folder' reads data_dir/<split>/<class>/<image>; no directory {root!r} "
                    f"(set input.data_dir / --config.data_dir)")
  # Classes of every split under data_dir, so that a split missing a class keeps the others' labels.
  splits = [d.path for d in os.scandir(data_dir) if d.is_dir()]
  classes = sorted({d.name for s in splits for d in os.scandir(s) if d.is_dir()})
  files, labels = [], []
  for label, name in enumerate(classes):
    if not os.path.isdir(os.path.join(root, name)):
      continue
    found = sorted(e.path for e in os.scandir(os.path.join(root, name))
                   if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))
    files += found
    labels += [label] * len(found)
  if not files:
    raise UserError(f"dataset 'folder': no images ({', '.join(IMAGE_SUFFIXES)}) in class directories "
                    f"of {root!r}")
  return Dataset(FolderSource(files, labels), len(classes))


_DATASETS: Dict[str, Callable[..., Dataset]] = {"digits": digits, "folder": image_folder}


def register_dataset(name: str, fn: Callable[[str, Optional[str]], Dataset]):
  """Makes `name` loadable by `get_dataset`: fn(split, data_dir) -> Dataset (e.g. a distilled set on disk)."""
  _DATASETS[name] = fn


def get_dataset(name: str, split: str, data_dir: Optional[str] = None) -> Dataset:
  if name.startswith("tfds:"):
    return tfds_source(name[len("tfds:"):], split, data_dir)
  if name not in _DATASETS:
    raise UserError(f"unknown dataset '{name}'{did_you_mean(name, _DATASETS)} "
                    f"(embedded: {sorted(_DATASETS)}; or 'tfds:<name>')")
  return _DATASETS[name](split, data_dir)


def grey_images(data: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """Images (N, H, W) in [0, 1] and int32 labels: embedded digits or a prepared tfds dataset."""
  if data == "digits":
    images, labels = digits_arrays(split, flat=False)
    return images[..., 0], labels
  if not data.startswith("tfds:"):
    raise UserError(f"unknown data '{data}' (digits, or tfds:mnist / tfds:fashion_mnist / tfds:kmnist)")
  source = tfds_source(data[len("tfds:"):], split).source
  examples = [source[i] for i in range(len(source))]
  images = np.stack([np.asarray(e["image"])[..., 0] for e in examples]).astype(np.float32) / 255.0
  return images, np.asarray([e["label"] for e in examples], np.int32)
