"""Dataset folders laid out as the real segmentation datasets are (ADE20K, CPS's VOC aug, Cityscapes), written
from the generated scenes for the full settings' end-to-end tests."""
import os

import numpy as np
from PIL import Image

from inception_zoo.data.segmentation import shapes_seg_dataset


def write_ade20k(root, num: int = 6, size=(70, 90)):
  """ADEChallengeData2016 with generated scenes: annotations 0 (other, ignored) .. 150."""
  source = shapes_seg_dataset("train", size=size, num_train=num, num_test=num).source
  for split in ("training", "validation"):
    os.makedirs(root / "images" / split, exist_ok=True)
    os.makedirs(root / "annotations" / split, exist_ok=True)
    for i in range(num):
      ex = source[i]
      name = f"ADE_{split}_{i:08d}"
      Image.fromarray(ex["image"]).save(root / "images" / split / f"{name}.jpg", quality=95)
      Image.fromarray((ex["label"] * 30).astype(np.uint8)).save(root / "annotations" / split / f"{name}.png")


def write_voc_aug(root, num: int = 8, size=(70, 90)):
  """CPS's DATA/pascal_voc layout: train_aug / val folders of image/*.jpg and label/*.png, lists of names and
  a 1/2 partition."""
  source = shapes_seg_dataset("train", size=size, num_train=num, num_test=num).source
  names = [f"2007_{i:06d}" for i in range(num)]
  for folder in ("train_aug", "val"):
    os.makedirs(root / folder / "image", exist_ok=True)
    os.makedirs(root / folder / "label", exist_ok=True)
    for i, name in enumerate(names):
      ex = source[i]
      Image.fromarray(ex["image"]).save(root / folder / "image" / f"{name}.jpg", quality=95)
      Image.fromarray(ex["label"] * 4).save(root / folder / "label" / f"{name}.png")
  (root / "train_aug.txt").write_text("\n".join(names) + "\n")
  (root / "val.txt").write_text("\n".join(names[:4]) + "\n")
  os.makedirs(root / "subset_train_aug", exist_ok=True)
  (root / "subset_train_aug" / "train_aug_labeled_1-2.txt").write_text("\n".join(names[::2]) + "\n")
  (root / "subset_train_aug" / "train_aug_unlabeled_1-2.txt").write_text("\n".join(names[1::2]) + "\n")


def write_cityscapes(root, num: int = 8, size=(64, 128)):
  """leftImg8bit / gtFine with labelIds only (7 road, 8 sidewalk, 11 building, 26 car, 0 unlabelled)."""
  source = shapes_seg_dataset("train", size=size, num_train=num, num_test=num).source
  ids = np.array([7, 8, 11, 26, 0], np.uint8)
  for split in ("train", "val"):
    os.makedirs(root / "leftImg8bit" / split / "aachen", exist_ok=True)
    os.makedirs(root / "gtFine" / split / "aachen", exist_ok=True)
    for i in range(num):
      ex = source[i]
      name = f"aachen_{i:06d}_000019"
      Image.fromarray(ex["image"]).save(root / "leftImg8bit" / split / "aachen" / f"{name}_leftImg8bit.png")
      Image.fromarray(ids[ex["label"]]).save(root / "gtFine" / split / "aachen" / f"{name}_gtFine_labelIds.png")
