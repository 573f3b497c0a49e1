"""cda's experiment driver (README.md; the recipes are experiments/cda.py)."""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception_zoo.data import datasets
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.cda import dataset, sre2l
from inception_zoo.utils import plots

# "random_real": a random real subset on its own labels, the Random baseline of dataset-distillation
# tables; "random_real_relabel": the same images relabelled by the teacher like the distilled sets.
METHODS = ("random_real", "random_real_relabel", "sre2l", "cda")


NAMES = ("random real", "random real,\nrelabelled", "SRe2L", "CDA")


def _digits(split: str, size: int):
  images, labels = datasets.digits_arrays(split, flat=False)
  images = jax.image.resize(jnp.asarray(images), (len(images), size, size, 1), "linear")
  return images * 2 - 1, jnp.asarray(labels)


def random_real(images, labels, ipc: int, num_classes: int, seed: int):
  """`ipc` training images per class, drawn without replacement, in class order."""
  rng = np.random.default_rng(seed)
  labels = np.asarray(labels)
  idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), ipc, replace=False)
                        for c in range(num_classes)])
  return images[idx]


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  if config.data != "digits":  # the full pipeline, resumable batch by batch and step by step
    return sre2l.run(config, workdir)
  x_train, y_train = _digits("train", config.image_size)
  x_test, y_test = _digits("test", config.image_size)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  key = jax.random.key(config.seed)
  model = dataset.BNConvNet(config.num_classes, tuple(config.widths))

  teacher = dataset.squeeze(model, x_train, y_train, jax.random.fold_in(key, 0),
                            num_steps=config.teacher_steps, batch_size=config.teacher_batch_size,
                            learning_rate=config.teacher_lr, writer=writer, log_every=config.log_every)
  result = {"teacher/accuracy": float(dataset.accuracy(model, teacher, x_test, y_test))}

  # Recovery: the SRe2L runs (milestone 0) and the CDA runs, all seeds, in one loop.
  labels = jnp.repeat(jnp.arange(config.num_classes), config.ipc)
  seeds = config.seeds
  keys = jax.random.split(jax.random.fold_in(key, 1), 2 * seeds)
  synthetic = dataset.recover(
      model, teacher, labels, keys, [0.0] * seeds + [config.milestone] * seeds,
      image_shape=x_train.shape[1:], num_steps=config.recover_steps, mode=config.curriculum,
      lowest=config.min_crop_scale, learning_rate=config.recover_lr, r_bn=config.r_bn,
      first_multiplier=config.first_bn_multiplier, jitter=config.jitter, writer=writer,
      log_every=config.log_every)
  real = jnp.stack([random_real(x_train, y_train, config.ipc, config.num_classes, config.seed + s)
                    for s in range(seeds)])
  sets = jnp.concatenate([real, real, synthetic])  # (methods x seeds, n, H, W, 1) in METHODS order

  students = dataset.train_students(
      model, model, teacher, sets, jax.random.fold_in(key, 2), num_steps=config.student_steps,
      learning_rate=config.student_lr, weight_decay=config.student_weight_decay,
      temperature=config.temperature, min_scale=config.min_crop_scale,
      hard_labels=[labels] * seeds + [None] * (3 * seeds), writer=writer, log_every=config.log_every)
  accuracy = np.asarray(jax.vmap(lambda v: dataset.accuracy(model, v, x_test, y_test))(students))
  teacher_on_sets = np.asarray(jax.vmap(lambda x: dataset.accuracy(model, teacher, x, labels))(sets))
  for m, method in enumerate(METHODS):
    runs = accuracy[m * seeds:(m + 1) * seeds]
    result[f"{method}/accuracy"] = float(np.mean(runs))
    result[f"{method}/accuracy_std"] = float(np.std(runs))
    result[f"{method}/teacher_accuracy_on_set"] = float(np.mean(teacher_on_sets[m * seeds:(m + 1) * seeds]))
    result.update({f"{method}/accuracy/seed{s}": float(a) for s, a in enumerate(runs)})
  writer.write(config.recover_steps + config.student_steps, result)
  writer.close()
  plot(config, result, np.asarray(sets), os.path.join(workdir, "cda_digits.png"))
  return result


def plot(config, result: Dict[str, float], sets: np.ndarray, path: str):
  plt = plots.pyplot()
  fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), gridspec_kw={"width_ratios": [1.6, 1, 1, 1]})
  ax = axes[0]
  for m, method in enumerate(METHODS):
    runs = [result[f"{method}/accuracy/seed{s}"] for s in range(config.seeds)]
    ax.bar(m, result[f"{method}/accuracy"], color="C0" if method == "cda" else "0.7")
    ax.plot([m] * len(runs), runs, "k.", ms=6)
  ax.axhline(result["teacher/accuracy"], ls="--", color="C3", label="teacher (all 1,437 images)")
  ax.set_xticks(range(len(METHODS)), NAMES, fontsize=8)
  ax.set_ylabel(f"student test accuracy, IPC {config.ipc}")
  ax.set_ylim(min(result[f"{m}/accuracy"] for m in METHODS) - 0.1, 1.0)
  ax.legend(loc="lower right", fontsize=8)
  # One seed of each set (the real one once): a row per class, IPC images per row.
  n, size = config.ipc, config.image_size
  for panel, m in enumerate((0, 2, 3)):
    images = sets[m * config.seeds][..., 0].reshape(config.num_classes, n, size, size)
    mosaic = images.transpose(0, 2, 1, 3).reshape(config.num_classes * size, n * size)
    axes[panel + 1].imshow(mosaic, cmap="gray", vmin=-1, vmax=1)
    axes[panel + 1].set_title(NAMES[m].replace(",\n", ", "))
    axes[panel + 1].axis("off")
  plots.save(fig, path)
