"""The CPU settings' data: the photographs shipped with scikit-learn, their colour regions, scenes of
textured shapes, the probe's labelled crops, and the small CNN pre-trained on them (README.md)."""
import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage
from sklearn.cluster import KMeans
from sklearn.datasets import load_sample_images

from inception_zoo.data import pp
from inception_zoo.projects.pixpro import pixpro


class SmallConvNet(nn.Module):
  """Four 3x3 conv-BN-ReLU layers, stride 4: the CPU setting's backbone. Returns (None, {"C2": map})."""
  width: int = 32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    for i, (features, stride) in enumerate([(self.width // 2, 2), (self.width, 1), (self.width, 2),
                                            (2 * self.width, 1)]):
      x = nn.Conv(features, (3, 3), stride, padding=1, use_bias=False, name=f"conv{i}")(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{i}")(x))
    return None, {"C2": x}


def load_images(config) -> list:
  """The two sample photographs, downsampled `image_scale` times (uint8 HWC)."""
  out = []
  for img in load_sample_images().images:
    h, w = img.shape[:2]
    size = (w // config.image_scale, h // config.image_scale)
    out.append(np.asarray(Image.fromarray(img).resize(size, Image.BOX)))
  return out


def region_labels(images, config) -> list:
  """Per-pixel labels: k-means of each image's blurred colours (image i gets classes k*i .. k*i+k-1)."""
  labels = []
  for i, img in enumerate(images):
    blurred = ndimage.gaussian_filter(img.astype(np.float32), (config.label_blur, config.label_blur, 0))
    km = KMeans(config.clusters_per_image, n_init=4, random_state=config.seed)
    clusters = km.fit_predict(blurred.reshape(-1, 3)).reshape(img.shape[:2])
    labels.append(clusters + i * config.clusters_per_image)
  return labels


TEXTURES = ("horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard")


def textured_shapes(photos, num: int, size: int, rng: np.random.Generator, periods=(4, 8)):
  """`num` scenes of `size`^2 px: a crop of a sample photograph (label 0) under three random discs or
  squares, each filled with one of the TEXTURES (label 1 + its index) in two random colours at a random
  period and phase. Colour says nothing of a shape's label: its local structure does."""
  yy, xx = np.mgrid[:size, :size].astype(np.float32)
  coords = (yy, xx, (yy + xx) / np.sqrt(2))
  images, labels = [], []
  for _ in range(num):
    photo = photos[rng.integers(len(photos))]
    top, left = rng.integers(photo.shape[0] - size + 1), rng.integers(photo.shape[1] - size + 1)
    image = photo[top:top + size, left:left + size].astype(np.float32)
    label = np.zeros((size, size), np.int32)
    for _ in range(3):
      kind, period, phase = rng.integers(len(TEXTURES)), rng.uniform(*periods), rng.uniform(0, 2 * np.pi)
      if kind < 3:
        on = np.sin(2 * np.pi * coords[kind] / period + phase) > 0
      else:
        on = (np.sin(2 * np.pi * yy / period + phase) > 0) ^ (np.sin(2 * np.pi * xx / period + phase) > 0)
      cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 6, size / 3)
      inside = ((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2) if rng.random() < 0.5 else (
          (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r))
      colours = rng.uniform(0, 255, (2, 3)).astype(np.float32)
      image[inside] = np.where(on[inside, None], colours[0], colours[1])
      label[inside] = 1 + kind
    images.append(image.astype(np.uint8))
    labels.append(label)
  return np.stack(images), np.stack(labels)


def dense_task(config):
  """(pre-training images, probe train (images, labels), probe test (images, labels), classes).
  `sample_images`: the photographs' colour regions, the probe trained on the left `probe_split` of each
  and scored on the right; `textured_shapes`: scenes of textured shapes, the probe scored on scenes
  not seen in pre-training."""
  photos = load_images(config)
  if config.data == "sample_images":
    labels = region_labels(photos, config)
    cut = [int(img.shape[1] * config.probe_split) for img in photos]
    train = ([p[:, :c] for p, c in zip(photos, cut)], [y[:, :c] for y, c in zip(labels, cut)])
    test = ([p[:, c:] for p, c in zip(photos, cut)], [y[:, c:] for y, c in zip(labels, cut)])
    return photos, train, test, len(photos) * config.clusters_per_image
  rng = np.random.default_rng(config.seed)
  scenes = functools.partial(textured_shapes, photos, size=config.scene_size, rng=rng,
                             periods=tuple(config.texture_period))
  pretrain, _ = scenes(config.num_scenes)
  train, test = scenes(config.probe_scenes), scenes(config.probe_scenes)
  return list(pretrain), train, test, 1 + len(TEXTURES)


def probe_crops(images, labels, config, rng: np.random.Generator):
  """`probe_crops` random crops of each image, with the labels at the centres of their stride-4 cells.
  Returns images (N, S, S, 3), labels (N, S/4 * S/4)."""
  lo, hi = config.probe_area or (config.area_min, config.area_max)
  crop = pp.build(f"inception_crop({config.view_size}, {lo}, {hi}, "
                  f"return_box=True)|normalize")
  cells = config.view_size // 4
  xs, ys, boxes = [], [], []
  for img, lab in zip(images, labels):
    for _ in range(config.probe_crops):
      ex = crop({"image": img}, rng)
      xs.append(ex["image"])
      boxes.append(ex["box"])
    centres, _ = pixpro.cell_centres(jnp.asarray(np.stack(boxes[-config.probe_crops:])), cells, cells)
    yx = np.floor(np.asarray(centres) * lab.shape).astype(int)
    ys.append(lab[yx[..., 0], yx[..., 1]])
  return np.stack(xs), np.concatenate(ys)
