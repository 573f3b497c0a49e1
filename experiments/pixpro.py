"""PixPro (Xie et al., "Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised Visual
Representation Learning", CVPR 2021), paper 21 of the zoo: pixel-level vs instance-level pre-training
of a small CNN on real photographs, judged by a per-pixel linear probe.

Claim tested (Sec. 4, Tables 1-3, qualitatively): pre-training with pixel-level consistency
(PixPro: positive pairs of feature-map cells from the views' overlap, pixel propagation) transfers
better to a dense task than the instance-level method it builds on (BYOL: pooled features of the two
views), at the same pre-training budget; both against a randomly initialised backbone.
Reproduced on textured shapes (`--config=textured`, below); not on the photographs' colour regions.
Plot: probe mIoU per method and one held-out crop segmented by each, in WORKDIR/pixpro_probe.png.

The colour-region task (`--config=runlocal`, the photographs themselves):
  python -m experiments.pixpro --config=runlocal --workdir=workdirs/pixpro
CPU time here: 46 s of CPU (2 min 44 s wall on 2 heavily shared cores). Measured (probe on 4,608
held-out cells of 128 crops, 8 classes), mIoU / cell accuracy: PixPro 0.290 / 0.512, BYOL 0.288 /
0.543, random init 0.270 / 0.485; seeds 1 and 2 (mIoU): PixPro 0.406, 0.320, BYOL 0.423, 0.372,
random 0.244, 0.285. Both pre-trainings beat the random init; PixPro's lead over BYOL is NOT
reproduced at this scale. (With the earlier hand-written view sampler, the same setting gave PixPro
0.307, BYOL 0.239, random 0.254, and PixPro led BYOL in four of five settings tried: at this budget
the order of the two is within the noise of the views drawn.)

The dense task where the claim holds (`--config=textured`, 76 s of CPU, 46 s wall): scenes of 64 x 64
px, a crop of a photograph under three discs or squares filled with horizontal, vertical or diagonal
stripes or a checkerboard in two random colours (`textured_shapes`; labels: background and the 4
textures; colour says nothing of a label), pre-trained 300 steps on 64 scenes with small views (8-30%
of the area at 32 px, hue jitter 0.1), probed on crops of 30-100% of 16 unseen scenes.
  python -m experiments.pixpro --config=textured --workdir=workdirs/pixpro_textured
mIoU PixPro / BYOL / random init, seeds 0-7:
  PixPro 0.200 0.221 0.227 0.267 0.197 0.212 0.195 0.170 (mean 0.211)
  BYOL   0.185 0.201 0.193 0.213 0.187 0.209 0.180 0.175 (mean 0.193)
  random 0.157 0.166 0.187 0.194 0.169 0.178 0.160 0.160 (mean 0.171)
PixPro leads BYOL in 7 of 8 seeds (cell accuracy, means: 0.524 / 0.504 / 0.490), REPRODUCING the
claim. Seeds 0-6 at 600 steps: PixPro leads in 6 of 7 (means 0.220 / 0.199). The views' size is what
decides it: two views of 8-30% of a scene often show different shapes, and the instance-level loss
must then map different textures to one pooled feature, while PixPro only pairs the cells of the
views' overlap (the paper's motivation: instance-level pretext tasks suit iconic images, not dense
prediction). With views of 30-100% (most of the scene in both) the order was noise: PixPro led in 1
of 3 seeds (means 0.206 / 0.224 / 0.170, 600 steps). PixPro with its instance branch
(`--config.instance_weight=1`) is implemented and not in the default run.

CPU setting (`runlocal`): the two photographs shipped with scikit-learn (`load_sample_images`: china,
flower; 427 x 640), downsampled 4x. Pre-training views (data/two_view.py, the loader of the full
setting): random-resized crops (20-100% of the area) to 24 x 24 with their boxes, random flips
tracked in the boxes (`pp.flip_view_lr`) and brightness / contrast / saturation jitter 0.4; a 4-layer
CNN of stride 4 (6 x 6 x 64 maps: the paper's 7 x 7 C5 at this scale), projection head 256 -> 64,
batch 12, 120 steps of Adam (lr 2e-3), momentum 0.99 -> 1, gamma 2, T 0.7. BYOL is the same network's
instance branch alone (pooled projection + predictor), with the same views, steps and initial weights.
The dense task (our construction): per-pixel labels = k-means (4 clusters per image, 8 classes) of the
colours of the image blurred at sigma 6 px, i.e. the image's large colour regions; a pixel's own colour
does not give its label near region borders or in textured regions. Probe: frozen backbone, one linear
softmax on the stride-4 features, cells labelled at their centres; trained on 64 random crops of the
left 60% of each image, measured (cell accuracy, mIoU) on 64 crops of the right 40%. PixContrast
(`--config.methods="('pixpro', 'pixcontrast', 'byol')"`) is implemented but not in the default run.

Each method pre-trains in WORKDIR/<method> on the shared step loop: its whole state is checkpointed
(every `checkpoint_every` steps, at the end, on pre-emption) and the same command resumes it exactly;
batch k is a function of the seed and k.

Full setting (`get_config()`): ResNet-50 C5, projection 2048 -> 4096 -> 256, ImageNet-1K (tfds
`imagenet2012`, prepared), 100 epochs (400: `--config.total_steps=500400`), batch 1024 data-parallel
over every device, LARS with base lr 1.0 x batch / 256, weight decay 1e-5, 5 warm-up epochs then
cosine, momentum 0.99 -> 1 (tools/pixpro_base_r50_100ep.sh of the official code); views of the
official BYOL augmentation (`two_view.byol_views`): crops of 8-100% of the area at 224, flip, colour
jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2, blur p 1.0 / 0.1, solarize p 0 / 0.2. It
pre-trains and checkpoints every 5,000 steps; the dense transfer (VOC / COCO / Cityscapes) of the
paper is not here.
"""
import functools
import os
from typing import Callable, Dict, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image
from scipy import ndimage
from sklearn.cluster import KMeans
from sklearn.datasets import load_sample_images

from inception_zoo import sharding
from inception_zoo.data import datasets, pipeline, pp, two_view
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter, read_metrics
from inception_zoo.registry import create_model
from inception_zoo.train import pixpro
from inception_zoo.train.fullbatch import fit
from inception_zoo.train.state import global_batch, make_init
from inception_zoo.utils import plots

def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="pixpro_sample_images", data="sample_images", data_dir=None, seed=0, methods=("pixpro", "byol"),
      image_scale=4, view_size=24, area_min=20.0, area_max=100.0,
      # Per-view augmentation after the crop and flip (`two_view.byol_views`): colour jitter strengths
      # (brightness, contrast, saturation, hue) and the probabilities of each op in views 1 and 2.
      jitter=(0.4, 0.4, 0.4, 0.0), jitter_p=1.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0),
      # probe_area: the probe crops' range of area (%), () = the pre-training views' (area_min, area_max).
      label_blur=6.0, probe_area=(), clusters_per_image=4, probe_split=0.6, probe_crops=64, probe_steps=300,
      num_scenes=64, scene_size=48, probe_scenes=16, texture_period=(4.0, 8.0),  # `textured_shapes`
      probe_lr=0.05, backbone="small_cnn", feature="C2", width=32, hidden_dim=256, dim=64,
      batch_size=12, total_steps=120, log_every=40, optimizer="adam", learning_rate=2e-3,
      weight_decay=0.0, warmup_steps=0, momentum=0.99, gamma=2.0, transform_layers=1,
      pos_ratio=0.7, temperature=0.3, instance_weight=0.0, checkpoint_every=0, keep_checkpoints=1,
      num_threads=2, mesh=ml_collections.ConfigDict(dict(data=1, fsdp=1))))
  if arg == "runlocal":
    return c
  if arg == "textured":  # the second dense task: textured shapes on the photographs
    # Small pre-training views (8-30% of a scene) often show different shapes: the probe's crops keep
    # the 30-100% of the other settings.
    c.update(name="pixpro_textured_shapes", data="textured_shapes", scene_size=64, view_size=32,
             area_min=8.0, area_max=30.0, probe_area=(30.0, 100.0), texture_period=(6.0, 12.0),
             jitter=(0.4, 0.4, 0.4, 0.1), probe_crops=8, total_steps=300, log_every=100)
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, textured, or none = the ImageNet-1K ResNet-50 "
                    f"setting)")
  steps_per_epoch = 1_281_167 // 1024
  c.update(name="pixpro_r50_i1k", data="tfds:imagenet2012", backbone="resnet50", feature="C5",
           view_size=224, area_min=8.0, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale_p=0.2,
           blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2), hidden_dim=4096, dim=256, batch_size=1024,
           total_steps=100 * steps_per_epoch, log_every=100, optimizer="lars",
           learning_rate=1.0 * 1024 / 256, weight_decay=1e-5, warmup_steps=5 * steps_per_epoch,
           methods=("pixpro",), checkpoint_every=5_000, keep_checkpoints=3, num_threads=32)
  c.mesh.data = -1  # data-parallel over every device
  return c


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


def views(config) -> two_view.Preprocess:
  """The two augmented views of an image and their boxes (data/two_view.py) with the config's recipe."""
  return two_view.two_views(*two_view.byol_views(
      config.view_size, config.area_min, config.area_max, tuple(config.jitter), config.jitter_p,
      config.grayscale_p, tuple(config.blur_p), tuple(config.solarize_p)))


def pretraining_source(config, images=None):
  """ImageNet's training split, or the CPU setting's images, repeated to at least one batch (so a
  shuffled pass over them draws each about equally often)."""
  if images is not None:
    repeated = np.stack([images[i % len(images)] for i in range(max(config.batch_size, len(images)))])
    return datasets.ArraySource(repeated, np.zeros(len(repeated)))
  return datasets.get_dataset(config.data, "train", config.data_dir).source


def batch_stream(source, config, mesh) -> Callable[[int], Iterator]:
  """start -> the global batches of steps start+1, ...: batch k is a function of (seed, k)."""
  def batches(start: int):
    for local in pipeline.train_batches(source, views(config), global_batch=config.batch_size,
                                        seed=config.seed, start_batch=start,
                                        num_threads=config.num_threads):
      yield global_batch(mesh, local)
  return batches


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


def make_tx(config):
  schedule = config.learning_rate
  if config.warmup_steps:
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, config.warmup_steps,
                                                  config.total_steps)
  if config.optimizer == "adam":
    return optax.adamw(schedule, weight_decay=config.weight_decay)
  if config.optimizer == "lars":
    # The official LARS: no weight decay and no trust ratio for BN parameters and biases.
    mask = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: path[-1].key not in ("bias", "scale"), params)
    return optax.lars(schedule, weight_decay=config.weight_decay, weight_decay_mask=mask,
                      trust_ratio_mask=mask, momentum=0.9)
  raise UserError(f"unknown optimizer '{config.optimizer}' (adam, lars)")


def build_model(config) -> pixpro.PixPro:
  """The backbone (the small CNN, or a registered network without its classifier) with the pixel
  branch, and the instance branch when a method needs it."""
  if config.backbone == "small_cnn":
    backbone = SmallConvNet(config.width)
  else:
    backbone = create_model(config.backbone, num_classes=0)
  return pixpro.PixPro(backbone, feature=config.feature, hidden_dim=config.hidden_dim,
                       dim=config.dim, gamma=config.gamma, transform_layers=config.transform_layers,
                       instance="byol" in config.methods or config.instance_weight > 0)


def initial_state(model, tx, config, mesh):
  """(init, shardings): () -> the initial state (the seed's weights), replicated over the mesh."""
  init = functools.partial(jax.jit(make_init(model, tx, (config.view_size, config.view_size, 3))),
                           jax.random.key(config.seed))
  return init, jax.tree.map(lambda _: sharding.replicated(mesh), jax.eval_shape(init))


def method_weights(config, method: str) -> Dict[str, float]:
  """PixPro / PixContrast: the pixel loss (+ the instance branch at `instance_weight`); BYOL: the
  instance branch alone."""
  if method == "byol":
    return {"pixel": 0.0, "instance": 1.0}
  return {"pixel": 1.0, "instance": config.instance_weight}


def linear_probe(train_x, train_y, test_x, num_classes: int, config, writer, prefix: str) -> np.ndarray:
  """Softmax regression on standardised frozen features; returns the test predictions."""
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
  params = {"w": jnp.zeros((train_x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}

  def loss_fn(p, key):
    del key
    logits = train_x @ p["w"] + p["b"]
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, train_y))

  params, _ = fit(loss_fn, params, optax.adam(config.probe_lr), config.probe_steps,
                  log_every=config.probe_steps, writer=writer, prefix=prefix)
  return np.asarray(jnp.argmax(test_x @ params["w"] + params["b"], -1))


def mean_iou(pred: np.ndarray, label: np.ndarray, num_classes: int) -> float:
  ious = []
  for k in range(num_classes):
    union = np.sum((pred == k) | (label == k))
    if union:
      ious.append(np.sum((pred == k) & (label == k)) / union)
  return float(np.mean(ious))


class DenseProbe:
  """The dense task (`dense_task`): a linear probe of frozen backbone features, trained on crops of its
  training images, scored on crops of its held-out ones. `probe(variables, name)` -> {"probe/accuracy",
  "probe/miou"}; the held-out predictions are kept in `predictions[name]`."""

  def __init__(self, train, test, num_classes: int, model: pixpro.PixPro, config, writer: MetricWriter):
    self.num_classes = num_classes
    rng = np.random.default_rng(config.seed)  # the probe's crops do not depend on pre-training
    self.train, self.test = (probe_crops(*part, config, rng) for part in (train, test))
    self.features = jax.jit(lambda v, x: model.backbone.apply(v, x, train=False)[1][config.feature])
    self.config, self.writer, self.predictions = config, writer, {}

  def __call__(self, variables, name: str) -> Dict[str, float]:
    f_train, f_test = (np.asarray(self.features(variables, jnp.asarray(x)))
                       for x in (self.train[0], self.test[0]))
    pred = linear_probe(f_train.reshape(-1, f_train.shape[-1]), self.train[1].reshape(-1),
                        f_test.reshape(-1, f_test.shape[-1]), self.num_classes, self.config, self.writer,
                        f"{name}/probe/")
    truth = self.test[1].reshape(-1)
    self.predictions[name] = pred.reshape(self.test[1].shape)
    return {"probe/accuracy": float(np.mean(pred == truth)),
            "probe/miou": mean_iou(pred, truth, self.num_classes)}


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  methods = ("pixpro", "pixcontrast", "byol")
  for m in config.methods:
    if m not in methods:
      raise UserError(f"unknown method '{m}' ({', '.join(methods)})")
  if len(config.probe_area) not in (0, 2):
    raise UserError(f"probe_area must be () or (min, max) in % of the image, got {config.probe_area}")
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  probing = config.data in ("sample_images", "textured_shapes")
  images, probe_train, probe_test, num_classes = dense_task(config) if probing else (None,) * 4
  mesh = sharding.make_mesh(config.mesh.to_dict())
  batches = batch_stream(pretraining_source(config, images), config, mesh)

  # Every method starts from the same initial weights (also the random-init baseline); the instance
  # baseline shares PixPro's compiled step, its pixel loss weighted 0 (`pixpro.make_train_step`).
  model, tx = build_model(config), make_tx(config)
  init, shardings = initial_state(model, tx, config, mesh)
  backbone_of = lambda s: {"params": s.params["backbone"], "batch_stats": s.batch_stats["backbone"]}
  probe = DenseProbe(probe_train, probe_test, num_classes, model, config, writer) if probing else None
  steps = {}
  result: Dict[str, float] = {}
  for method in config.methods:
    pixel_loss = "pixcontrast" if method == "pixcontrast" else "pixpro"
    if pixel_loss not in steps:
      steps[pixel_loss] = pixpro.make_train_step(
          model, tx, config.total_steps, base_momentum=config.momentum, pixel_loss=pixel_loss,
          pos_ratio=config.pos_ratio, temperature=config.temperature)
    # Each method checkpoints, resumes and logs in a workdir of its own.
    _, done = pixpro.pretrain(steps[pixel_loss], init, batches, method_weights(config, method), config,
                              os.path.join(workdir, method), shardings=shardings, desc=method,
                              evaluate=probe and (lambda state, m=method: probe(backbone_of(state), m)))
    if probing:
      result.update({f"{method}/{k.split('/')[-1]}": v for k, v in done.items()})
    else:  # no dense task at this scale here: the last logged training loss
      logged = [r for r in read_metrics(os.path.join(workdir, method)) if "train/loss" in r]
      result[f"{method}/loss"] = logged[-1]["train/loss"]
  if probing:
    result.update({f"random/{k.split('/')[-1]}": v for k, v in probe(backbone_of(init()), "random").items()})
    writer.write(config.total_steps, result)
    plot(result, probe.test, probe.predictions, probe.num_classes, os.path.join(workdir, "pixpro_probe.png"))
  writer.close()
  return result


def plot(result, test, predictions, num_classes: int, path: str):
  plt = plots.pyplot()
  names = list(predictions)
  fig, axes = plt.subplots(1, 3 + len(names), figsize=(3 * (3 + len(names)), 3))
  axes[0].bar(names, [result[f"{n}/miou"] for n in names])
  axes[0].set_ylabel("probe mIoU (held-out crops)")
  i = 0  # the first held-out crop
  cells = int(np.sqrt(test[1].shape[1]))
  axes[1].imshow(np.clip(test[0][i] * np.float32(pp.IMAGENET_STD) + np.float32(pp.IMAGENET_MEAN), 0, 1))
  axes[1].set_title("held-out crop")
  for ax, (title, lab) in zip(axes[2:], [("labels", test[1][i])] + [(n, predictions[n][i]) for n in names]):
    ax.imshow(lab.reshape(cells, cells), vmin=0, vmax=num_classes, cmap="tab10")
    ax.set_title(title)
  for ax in axes[1:]:
    ax.axis("off")
  plots.save(fig, path)


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
