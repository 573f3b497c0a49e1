"""PixPro (Xie et al., "Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised Visual
Representation Learning", CVPR 2021), paper 21 of the zoo: pixel-level vs instance-level pre-training
of a small CNN on real photographs, judged by a per-pixel linear probe.

Claim reproduced (Sec. 4, Tables 1-3, qualitatively): pre-training with pixel-level consistency
(PixPro: positive pairs of feature-map cells from the views' overlap, pixel propagation) transfers
better to a dense task than the instance-level method it builds on (BYOL: pooled features of the two
views), at the same pre-training budget; both against a randomly initialised backbone.
Plot: probe mIoU per method and one held-out crop segmented by each, in WORKDIR/pixpro_probe.png.
  python -m experiments.pixpro --config=runlocal --workdir=workdirs/pixpro
CPU time here: 29 s of CPU (1 min 43 s wall on 2 shared cores). Measured (probe on 4,608 held-out
cells of 128 crops, 8 classes): mIoU / cell accuracy PixPro 0.307 / 0.543, BYOL 0.239 / 0.469, random
init 0.254 / 0.460. At this budget the ordering depends on the setting: of five settings tried (24 or 32 px
views, batch 8-16, 100-200 steps, width 16 or 32) PixPro led the random init in all five (once by only
0.009) and BYOL in four (not at 24 px, batch 16, 100 steps, lr 3e-3: 0.283 vs 0.296).

CPU setting (`runlocal`): the two photographs shipped with scikit-learn (`load_sample_images`: china,
flower; 427 x 640), downsampled 4x. Pre-training views: random-resized crops (20-100% of the area)
to 24 x 24 with their boxes (`pp.inception_crop(return_box=True)`), random flips (tracked in the box:
`pixpro.flip_box_lr`) and brightness / contrast / saturation jitter; a 4-layer CNN of stride 4
(6 x 6 x 64 maps: the paper's 7 x 7 C5 at this scale), projection head 256 -> 64, batch 12, 120 steps
of Adam (lr 2e-3), momentum 0.99 -> 1, gamma 2, T 0.7. BYOL is the same network's instance branch
alone (pooled projection + predictor), with the same views, steps and initial weights. The dense
task (our construction): per-pixel labels = k-means (4 clusters per image, 8 classes) of the colours
of the image blurred at sigma 6 px, i.e. the image's large colour regions; a pixel's own colour does
not give its label near region borders or in textured regions. Probe: frozen backbone, one linear
softmax on the stride-4 features, cells labelled at their centres; trained on 64 random crops of the
left 60% of each image, measured (cell accuracy, mIoU) on 64 crops of the right 40%. PixContrast
(`--config.methods="('pixpro', 'pixcontrast', 'byol')"`) is implemented but not in the default run.

Full setting (`get_config()`, config only: its two-view ImageNet loader is not implemented here):
ResNet-50 C5, projection 2048 -> 4096 -> 256, ImageNet-1K, 100 epochs (400: `--config.total_steps=500400`),
batch 1024 (8 x 128), LARS with base lr 1.0 x batch / 256, weight decay 1e-5, 5 warm-up epochs then
cosine, momentum 0.99 -> 1, crops 8-100% of the area at 224 (tools/pixpro_base_r50_100ep.sh of the
official code); transfer to VOC / COCO / Cityscapes as in the paper.
"""
import os
from typing import Dict

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

from experiments import common
from inception_zoo.data import pp
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter
from inception_zoo.train import pixpro
from inception_zoo.train.fullbatch import fit
from inception_zoo.train.state import make_init
from inception_zoo.utils import plots

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="pixpro_sample_images", data="sample_images", seed=0, methods=("pixpro", "byol"),
      image_scale=4, view_size=24, area_min=20.0, area_max=100.0, jitter=0.4,
      label_blur=6.0, clusters_per_image=4, probe_split=0.6, probe_crops=64, probe_steps=300,
      probe_lr=0.05, backbone="small_cnn", width=32, hidden_dim=256, dim=64,
      batch_size=12, total_steps=120, log_every=40, optimizer="adam", learning_rate=2e-3,
      weight_decay=0.0, warmup_steps=0, momentum=0.99, gamma=2.0, transform_layers=1,
      pos_ratio=0.7, temperature=0.3, instance_weight=0.0))
  if arg == "runlocal":
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = the ImageNet-1K ResNet-50 setting)")
  steps_per_epoch = 1_281_167 // 1024
  c.update(name="pixpro_r50_i1k", data="tfds:imagenet2012", backbone="resnet50", view_size=224,
           area_min=8.0, hidden_dim=4096, dim=256, batch_size=1024, total_steps=100 * steps_per_epoch,
           log_every=100, optimizer="lars", learning_rate=1.0 * 1024 / 256, weight_decay=1e-5,
           warmup_steps=5 * steps_per_epoch, methods=("pixpro",))
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


def _jitter(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """Brightness, contrast and saturation scaled by factors in [1 - s, 1 + s] (BYOL's colour jitter,
  without hue); img float in [0, 1]."""
  if not strength:
    return img
  b, c, s = rng.uniform(1 - strength, 1 + strength, 3)
  img = img * b
  img = (img - img.mean()) * c + img.mean()
  gray = img.mean(-1, keepdims=True)
  return np.clip((img - gray) * s + gray, 0.0, 1.0)


def _normalize(img_u8: np.ndarray) -> np.ndarray:
  return (img_u8.astype(np.float32) / 255.0 - MEAN) / STD


def view_pairs(images, config, rng: np.random.Generator) -> Dict[str, np.ndarray]:
  """total_steps x batch_size pairs of augmented views with their boxes, stacked (step, batch, ...)."""
  crop = pp.inception_crop(config.view_size, config.area_min, config.area_max, return_box=True)
  n = config.total_steps * config.batch_size
  out = {k: [] for k in ("view1", "view2", "box1", "box2")}
  for _ in range(n):
    img = images[rng.integers(len(images))]
    for v in ("1", "2"):
      ex = crop({"image": img}, rng)
      view, box = ex["image"].astype(np.float32) / 255.0, ex["box"]
      if rng.uniform() < 0.5:
        view, box = view[:, ::-1], pixpro.flip_box_lr(box)
      out["view" + v].append((_jitter(view, rng, config.jitter) - MEAN) / STD)
      out["box" + v].append(box)
  shape = (config.total_steps, config.batch_size)
  return {k: np.stack(v).astype(np.float32).reshape(*shape, *np.shape(v[0])) for k, v in out.items()}


def probe_crops(images, labels, config, rng: np.random.Generator, part: str):
  """Random crops of the left (`part`='train') or right ('test') part of each image, with the labels
  at the centres of their stride-4 cells. Returns images (N, S, S, 3), labels (N, S/4 * S/4)."""
  crop = pp.inception_crop(config.view_size, config.area_min, config.area_max, return_box=True)
  cells = config.view_size // 4
  xs, ys, boxes = [], [], []
  for img, lab in zip(images, labels):
    cut = int(img.shape[1] * config.probe_split)
    img, lab = (img[:, :cut], lab[:, :cut]) if part == "train" else (img[:, cut:], lab[:, cut:])
    for _ in range(config.probe_crops):
      ex = crop({"image": img}, rng)
      xs.append(_normalize(ex["image"]))
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
  """The small CNN with the pixel branch, and the instance branch when a method needs it."""
  if config.backbone != "small_cnn":
    raise UserError(f"the '{config.backbone}' setting is given as config only; this experiment runs "
                    f"the small CNN on the sample images (--config=runlocal)")
  return pixpro.PixPro(SmallConvNet(config.width), feature="C2", hidden_dim=config.hidden_dim,
                       dim=config.dim, gamma=config.gamma, transform_layers=config.transform_layers,
                       instance="byol" in config.methods or config.instance_weight > 0)


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


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  common.require_cpu_data(config, "sample_images")
  methods = ("pixpro", "pixcontrast", "byol")
  for m in config.methods:
    if m not in methods:
      raise UserError(f"unknown method '{m}' ({', '.join(methods)})")
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  rng = np.random.default_rng(config.seed)
  images = load_images(config)
  labels = region_labels(images, config)
  num_classes = len(images) * config.clusters_per_image
  batches = view_pairs(images, config, rng)
  probe = {part: probe_crops(images, labels, config, rng, part) for part in ("train", "test")}

  # Every method starts from the same initial weights (also the random-init baseline); the instance
  # baseline shares PixPro's compiled step, its pixel loss weighted 0 (`pixpro.make_train_step`).
  model, tx = build_model(config), make_tx(config)
  init_state = jax.jit(make_init(model, tx, (config.view_size, config.view_size, 3)))(
      jax.random.key(config.seed))
  features = jax.jit(lambda v, x: model.backbone.apply(v, x, train=False)[1]["C2"])
  backbone_of = lambda s: {"params": s.params["backbone"], "batch_stats": s.batch_stats["backbone"]}
  trained = {"random": backbone_of(init_state)}
  steps = {}
  for method in config.methods:
    pixel_loss = "pixcontrast" if method == "pixcontrast" else "pixpro"
    if pixel_loss not in steps:
      steps[pixel_loss] = pixpro.make_train_step(
          model, tx, config.total_steps, base_momentum=config.momentum, pixel_loss=pixel_loss,
          pos_ratio=config.pos_ratio, temperature=config.temperature)
    state = jax.tree.map(jnp.copy, init_state)  # own buffers: pretrain donates the state
    state, _ = pixpro.pretrain(steps[pixel_loss], state, batches, method_weights(config, method),
                               log_every=config.log_every, writer=writer, prefix=f"{method}/pretrain/")
    trained[method] = backbone_of(state)

  result: Dict[str, float] = {}
  predictions = {}
  for name, variables in trained.items():
    f_train, f_test = (np.asarray(features(variables, jnp.asarray(probe[p][0]))) for p in ("train", "test"))
    pred = linear_probe(f_train.reshape(-1, f_train.shape[-1]), probe["train"][1].reshape(-1),
                        f_test.reshape(-1, f_test.shape[-1]), num_classes, config, writer, f"{name}/probe/")
    truth = probe["test"][1].reshape(-1)
    result[f"{name}/accuracy"] = float(np.mean(pred == truth))
    result[f"{name}/miou"] = mean_iou(pred, truth, num_classes)
    predictions[name] = pred.reshape(probe["test"][1].shape)
  writer.write(config.total_steps, result)
  writer.close()
  plot(result, probe["test"], predictions, num_classes, os.path.join(workdir, "pixpro_probe.png"))
  return result


def plot(result, test, predictions, num_classes: int, path: str):
  plt = plots.pyplot()
  names = list(predictions)
  fig, axes = plt.subplots(1, 3 + len(names), figsize=(3 * (3 + len(names)), 3))
  axes[0].bar(names, [result[f"{n}/miou"] for n in names])
  axes[0].set_ylabel("probe mIoU (held-out crops)")
  i = 0  # the first held-out crop
  cells = int(np.sqrt(test[1].shape[1]))
  axes[1].imshow(np.clip(test[0][i] * STD + MEAN, 0, 1))
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
