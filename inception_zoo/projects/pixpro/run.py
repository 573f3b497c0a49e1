"""PixPro's experiment driver: pre-trains each method on the shared step loop from the same initial
weights, then scores each frozen backbone (and the random initialisation) with a per-pixel linear probe
on the dense task (README.md; the recipes are experiments/pixpro.py)."""
import functools
import os
from typing import Callable, Dict, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo import sharding
from inception_zoo.data import datasets, pipeline, pp
from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter, read_metrics
from inception_zoo.projects.pixpro import pixpro, views as view_pp
from inception_zoo.projects.pixpro.scenes import SmallConvNet, dense_task, probe_crops
from inception_zoo.registry import create_model
from inception_zoo.train.fullbatch import fit
from inception_zoo.train.state import global_batch, make_init
from inception_zoo.utils import plots


def views(config) -> view_pp.Preprocess:
  """The two augmented views of an image and their boxes (views.py) with the config's recipe."""
  return view_pp.two_views(*view_pp.byol_views(
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
