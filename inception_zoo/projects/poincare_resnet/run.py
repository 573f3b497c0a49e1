"""poincare_resnet's experiment driver (README.md; the recipes are experiments/poincare_resnet.py)."""
import os
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.data import datasets
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.poincare_resnet import poincare
from inception_zoo.projects.poincare_resnet.poincare_resnet import PoincareResNet
from inception_zoo.train import classification
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


def build(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  return PoincareResNet(num_classes=num_classes, **config.model.to_dict())


TASK = classification.Task(build, classification.make_train_step, classification.make_eval_step,
                           classification.classification_summary)


def layer_norms(config: ml_collections.ConfigDict) -> Dict[str, np.ndarray]:
  """Mean distance to the origin after each of `depth` Poincare FC layers, per initialisation."""
  n = config.norms
  c = config.model.c
  key_x, key_r, key_w = jax.random.split(jax.random.key(n.seed), 3)
  # Points spread over radii up to max_radius of the ball's radius 1 / sqrt(c).
  x = jax.random.normal(key_x, (n.num_points, n.dim))
  radius = jax.random.uniform(key_r, (n.num_points, 1), maxval=n.max_radius) / np.sqrt(c)
  x = x / jnp.linalg.norm(x, axis=-1, keepdims=True) * radius
  layer = poincare.PoincareLinear(n.dim, c)  # the init only decides the kernels passed in

  @jax.jit
  def distances(kernels, x):
    def one(h, z):
      h = layer.apply({"params": {"kernel": z, "bias": jnp.zeros(n.dim)}}, h)
      return h, jnp.mean(poincare.dist(h, jnp.zeros_like(h), c))
    return jnp.concatenate([jnp.mean(poincare.dist(x, jnp.zeros_like(x), c))[None],
                            jax.lax.scan(one, x, kernels)[1]])

  keys = jax.random.split(key_w, n.depth)
  out = {}
  for name, init in (("identity", poincare.identity_init), ("standard", poincare.hnn_init)):
    out[name] = np.asarray(distances(jax.vmap(lambda k: init(k, (n.dim, n.dim)))(keys), x))
  return out


def train_digits(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """Minibatch Adam on the digits (batches drawn inside `fit`'s scanned steps)."""
  d = config.digits
  train, test = (datasets.get_dataset("digits", split).source for split in ("train", "test"))
  to_input = lambda images: jnp.asarray(images, jnp.float32) / 127.5 - 1  # noqa: E731
  x_train, y_train = to_input(train.images), jnp.asarray(train.labels)
  model = PoincareResNet(num_classes=10, **config.model.to_dict())
  # Jitted: initialising op by op dispatches thousands of tiny ops (14 s of CPU here).
  variables = jax.jit(model.init)(jax.random.key(config.seed), x_train[:2])

  def forward(params, x):
    # Batch statistics in training and evaluation alike (the authors' code never switches them).
    return model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                       mutable=["batch_stats"])[0][0]

  def loss_fn(params, key):
    idx = jax.random.choice(key, len(y_train), (d.batch_size,), replace=False)
    logits = forward(params, x_train[idx])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_train[idx]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y_train[idx])}

  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  params, losses = fit(loss_fn, variables["params"], optax.adam(d.lr), config.total_steps,
                       key=jax.random.key(config.seed + 1), has_aux=True, log_every=config.log_every,
                       writer=writer)
  logits = jax.jit(forward)(params, to_input(test.images))
  top1 = float(np.mean(np.argmax(logits, -1) == test.labels))
  writer.write(config.total_steps, {"eval/top1": top1})
  writer.close()
  return {"digits/top1": top1, "digits/first_loss": float(losses[0]), "digits/final_loss": float(losses[-1])}


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """The full setting: one CIFAR run. The CPU setting: the norm experiment and the digits run."""
  if "norms" not in config:
    return classification.run(config, workdir, TASK)
  os.makedirs(workdir, exist_ok=True)
  norms = layer_norms(config)
  result = {"norms/input": float(norms["identity"][0])}
  for name, values in norms.items():
    result[f"norms/{name}_last"] = float(values[-1])
    result[f"norms/{name}_min"] = float(values.min())
  result.update(train_digits(config, workdir))
  plot(config, norms, result, os.path.join(workdir, "poincare_resnet.png"))
  return result


def plot(config, norms: Dict[str, np.ndarray], result: Dict[str, float], path: str):
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, values in norms.items():
    ax.plot(np.arange(len(values)), values, label=f"{name} init")
  ax.set_xlabel("Poincare FC layers applied")
  ax.set_yscale("log")
  ax.set_ylabel("mean distance to the origin")
  ax.set_title(f"c = {config.model.c}, dim {config.norms.dim}; digits top-1 "
               f"{result['digits/top1']:.3f}", fontsize=9)
  ax.legend()
  plots.save(fig, path)
