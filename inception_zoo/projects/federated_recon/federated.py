"""Federated reconnaissance with prototypes: running-mean class prototypes on clients, merged by a server.

Hendryx, KC, Walls, Morrison, "Federated Reconnaissance: Efficient, Distributed, Class-Incremental
Learning", arXiv 2109.00150, 2021 (paper 29 of the zoo).

A client keeps, per class it has seen, the mean embedding p_c and the count n_c of its examples, and
updates them online, batch by batch, with no gradient step. The server merges clients (and its own
base-class prototypes) by the count-weighted mean p_c = sum_i n_c^i p_c^i / sum_i n_c^i, which equals
the centroid of all the clients' examples of class c. Prediction: the nearest prototype (squared
Euclidean) among the classes seen so far. The memory is numpy float64: it is bookkeeping, not
training, and float64 makes merged and pooled means agree to rounding.

Data of the full setting: `omniglot` (TFDS, 28x28 grey as in the paper's Conv-4 protocol) and
`mini_imagenet` (a directory `<root>/<split>/<class>/*.jpg`, 84x84, the Ravi & Larochelle split).
"""
import dataclasses
import os
from typing import Iterable, Optional, Tuple

import numpy as np

from inception_zoo.errors import UserError


@dataclasses.dataclass(frozen=True)
class PrototypeMemory:
  """Per-class mean embeddings (C, D) and example counts (C,); classes with count 0 are unseen."""
  means: np.ndarray
  counts: np.ndarray

  @classmethod
  def empty(cls, num_classes: int, dim: int) -> "PrototypeMemory":
    return cls(np.zeros((num_classes, dim)), np.zeros((num_classes,), np.int64))

  @property
  def seen(self) -> np.ndarray:
    return np.flatnonzero(self.counts > 0)


def update(memory: PrototypeMemory, embeddings, labels) -> PrototypeMemory:
  """Running means after one batch: p_c <- (n_c p_c + sum of the batch's class-c rows) / (n_c + m_c)."""
  embeddings, labels = np.asarray(embeddings, np.float64), np.asarray(labels)
  if embeddings.ndim != 2 or embeddings.shape[1] != memory.means.shape[1] or len(labels) != len(embeddings):
    raise UserError(f"update expects embeddings (N, {memory.means.shape[1]}) and N labels; got "
                    f"{embeddings.shape} and {labels.shape}")
  if labels.size and (labels.min() < 0 or labels.max() >= len(memory.counts)):
    raise UserError(f"labels must lie in [0, {len(memory.counts)}); got {labels.min()}..{labels.max()}")
  sums = np.zeros_like(memory.means)
  np.add.at(sums, labels, embeddings)
  batch_counts = np.bincount(labels, minlength=len(memory.counts))
  counts = memory.counts + batch_counts
  means = np.where(counts[:, None] > 0,
                   (memory.counts[:, None] * memory.means + sums) / np.maximum(counts, 1)[:, None],
                   memory.means)
  return PrototypeMemory(means, counts)


def merge(memories: Iterable[PrototypeMemory]) -> PrototypeMemory:
  """The server's merge: count-weighted mean of every client's prototype of each class."""
  memories = list(memories)
  if not memories:
    raise UserError("merge needs at least one client memory")
  counts = sum(m.counts for m in memories)
  weighted = sum(m.counts[:, None] * m.means for m in memories)
  return PrototypeMemory(weighted / np.maximum(counts, 1)[:, None], counts)


def predict(memory: PrototypeMemory, embeddings) -> np.ndarray:
  """Nearest prototype among the seen classes (class ids of the memory)."""
  if not memory.seen.size:
    raise UserError("the memory has seen no class yet")
  embeddings = np.asarray(embeddings, np.float64)
  protos = memory.means[memory.seen]
  d = (embeddings ** 2).sum(1)[:, None] - 2 * embeddings @ protos.T + (protos ** 2).sum(1)[None]
  return memory.seen[np.argmin(d, axis=1)]


def omniglot(split: str, data_dir: Optional[str] = None, size: int = 28) -> Tuple[np.ndarray, np.ndarray]:
  """TFDS Omniglot as (images (N, size, size, 1) in [0, 1], character labels (N,)); ink is 1."""
  import tensorflow_datasets as tfds
  from PIL import Image
  try:
    ds = tfds.data_source("omniglot", split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types (not found, not prepared, bad split)
    raise UserError(f"cannot read tfds dataset 'omniglot' split '{split}' (prepare it with "
                    f"`tfds build omniglot`): {str(e).splitlines()[0]}")
  images, labels = [], []
  for ex in ds:
    grey = Image.fromarray(np.asarray(ex["image"])[..., 0]).resize((size, size), Image.BILINEAR)
    images.append(1.0 - np.asarray(grey, np.float32)[..., None] / 255.0)
    labels.append(int(ex["label"]))
  return np.stack(images), np.asarray(labels)


def mini_imagenet(root: str, split: str, size: int = 84) -> Tuple[np.ndarray, np.ndarray, list]:
  """mini-ImageNet from `<root>/<split>/<class>/*.jpg`: (images in [0, 1], labels, class names)."""
  from PIL import Image
  folder = os.path.join(root, split)
  if not os.path.isdir(folder):
    raise UserError(f"mini-ImageNet split folder '{folder}' not found "
                    f"(expected <root>/<split>/<class>/*.jpg)")
  classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
  images, labels = [], []
  for i, name in enumerate(classes):
    for f in sorted(os.listdir(os.path.join(folder, name))):
      img = Image.open(os.path.join(folder, name, f)).convert("RGB").resize((size, size), Image.BILINEAR)
      images.append(np.asarray(img, np.float32) / 255.0)
      labels.append(i)
  if not images:
    raise UserError(f"no images under '{folder}'")
  return np.stack(images), np.asarray(labels), classes
