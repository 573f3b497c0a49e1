"""Poincare ResNet (van Spengler, Berkhout, Mettes, "Poincare ResNet", ICCV 2023), paper 19 of the zoo.

CPU (25 s of CPU on 2 shared cores, most of it compilation): two of the paper's claims at small
scale, plotted to WORKDIR/poincare_resnet.png:
  python -m experiments.poincare_resnet --config=runlocal --workdir=workdirs/poincare_resnet
(a) Identity initialisation (Sec. 3.1): through 40 stacked Poincare FC layers (dimension 16, c = 0.1,
    256 random points of the ball), HNN++'s standard init N(0, (2 n m)^-1/2) pulls the points toward
    the origin layer after layer while the identity-based init Z = I / 2 keeps their norms.
(b) A tiny Poincare ResNet-4 (Poincare 3x3 stem, midpoint batch norm, one residual block, all at 16
    channels on the 8x8 map, pooling, Poincare FC classifier; identity init, c = 0.1) learns
    scikit-learn's 8x8 digits (1,437 train / 360 held-out images, values in [-1, 1]) with Adam,
    lr 1e-2, batch 64, 150 steps (7 epochs); held-out top-1 with batch statistics, as the authors'
    code evaluates. (Two stages, --config.model.depth=6 --config.model.widths=8,16, reach 0.958 in
    120 steps but compile 1.5x longer.)
Measured here: (a) mean distance to the origin 3.256 at the input; after 40 layers 3.256 (identity
init, equal to float precision) and 2e-15 (standard init: 1.41 after one layer, 8e-5 after ten);
(b) held-out top-1 0.917 (chance 0.1), training loss 2.30 -> 0.24.

Full setting (the paper's Sec. 4, CIFAR-10/100; `tfds build cifar10` / `cifar100` first):
  python -m experiments.poincare_resnet --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
                                          # = --config=resnet20_cifar10
  --config=resnet32_cifar10 | resnet20_cifar100 | resnet32_cifar100; --config.model.widths=16,32,64
for the wider networks. Recipe from the authors' code (maxvanspengler/poincare-resnet train.py):
batch 128, 500 epochs, Adam lr 1e-3 with weight decay 1e-4 on every parameter, constant lr, random
crops of 32 px with 4 px padding and horizontal flips, inputs in [-1, 1]; curvature 0.1 fixed. Their
geoopt RiemannianAdam adds the decay to the gradient (L2), as the zoo's 'adam' does (not 'adamw'); all
parameters are Euclidean (the ball enters through the layers), so its Riemannian step is Adam's. Their OOD
and adversarial evaluations are not
reproduced.
"""
import os
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.geometry import poincare
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter
from inception_zoo.models.poincare_resnet import PoincareResNet
from inception_zoo.train import classification
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots

SETTINGS = ("runlocal", "resnet20_cifar10", "resnet32_cifar10", "resnet20_cifar100", "resnet32_cifar100")


def build(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  return PoincareResNet(num_classes=num_classes, **config.model.to_dict())


TASK = classification.Task(build, classification.make_train_step, classification.make_eval_step,
                           classification.classification_summary)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  model = dict(depth=20, widths=(8, 16, 32), c=0.1, id_init=True, use_midpoint=True)
  if arg == "runlocal":
    # Its own loop (train/fullbatch.fit on in-memory digits), so none of the trainer's input fields;
    # total_steps / log_every / mesh.data keep the zoo's usual overrides working.
    return ml_collections.ConfigDict(dict(
        name="poincare_resnet", seed=0, model={**model, "depth": 4, "widths": (16,)},
        norms=dict(depth=40, dim=16, num_points=256, max_radius=0.9, seed=0),
        digits=dict(batch_size=64, lr=1e-2), total_steps=150, log_every=75, mesh=dict(data=1)))
  c = classification.base_config()
  c.model_name = "poincare_resnet"
  c.model = ml_collections.ConfigDict(model)
  arg = arg or "resnet20_cifar10"
  if arg not in SETTINGS:
    raise UserError(f"unknown setting '{arg}' ({', '.join(SETTINGS)}; default resnet20_cifar10)")
  depth, data = arg.split("_")
  c.name = f"poincare_{arg}"
  c.model.depth = int(depth[len("resnet"):])
  c.input.update(data=f"tfds:{data}", train_split="train", eval_split="test", batch_size=128,
                 eval_batch_size=1000, num_threads=16,
                 pp_train="decode|random_crop(32, pad=4)|flip_lr|value_range(-1, 1)",
                 pp_eval="decode|value_range(-1, 1)")
  c.num_epochs = 500.0
  c.optimizer.update(name="adam", weight_decay=1e-4, wd_mask=r".*")
  c.schedule.update(name="constant", base_lr=1e-3)
  c.log_every = 100
  return c


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
