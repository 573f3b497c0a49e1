"""Terminator (Zhang, "HyperZ.Z.W Operator Connects Slow-Fast Networks for Full Context Interaction",
arXiv 2401.17948, 2024), paper 26 of the zoo, on digits as 64-step sequences (1D) and 8x8 images (2D).

Claim reproduced (abstract, Sec. 5): a network of SFNE blocks, with hyper-kernels from coordinate-based
slow networks, the HyperZ.Z.W operator (FFT convolution for the global kernels) and no residual
connections, trains stably: the loss falls, accuracy is far above chance, and its per-layer features
stay near zero mean and unit variance (measured on held-out digits with the batch statistics of the
training set). The paper's headline numbers (sMNIST, pMNIST, sCIFAR-10, CIFAR) are not reproduced
here. A plain CNN of about the same parameter count, trained alike, is reported beside it, not
asserted against. Plot: loss curves and per-layer feature statistics in WORKDIR/terminator.png.
  python -m experiments.terminator --config=runlocal --workdir=workdirs/terminator
CPU time here: 53 s of CPU, 36 s wall (mostly XLA compiles of the two Terminators; their 150 steps take ~3 s).
Measured (360 held-out digits, 150 steps of batch 64): Terminator 1D accuracy 0.856 (loss 2.41 -> 1.22),
2D 0.919 (2.39 -> 0.96); its per-layer standardised features have per-channel |mean| 0.000 (exact: the
bottleneck sees instance-standardised branches, so batch standardisation removes the mean for any input)
and std 0.99-1.00 in both blocks. Plain CNN of the same size (13.3k / 13.1k vs 13.2k / 13.4k
parameters): 1D 0.256, 2D 0.664, its pre-activation |mean| 0.23 -> 0.66 (1D) and 0.31 -> 1.8 (2D), std
0.39 -> 0.85 and 0.54 -> 3.1 from block 1 to block 2.

CPU setting (`runlocal`): scikit-learn's 8x8 digits (1,437 train / 360 test, pixels in [0, 1]), read as a
sequence of 64 pixels (N, 64, 1) and as an image (N, 8, 8, 1); Terminator of width 16, 2 SFNE blocks,
local kernels 3 and 5, SIREN slow nets of 2 layers of 32 (omega_0 10); plain CNN of 2 convolutions
(kernel 3) of width 64 (1D) / 37 (2D), so both have about 13k parameters; Adam (lr 3e-3) through
`inception_zoo.train.fullbatch.fit`, 150 steps on random mini-batches of 64 (one per step's key); the
batch standardisation's statistics are set to the training set's before evaluation
(`protonet.calibrate_batch_stats`).

Full setting (`get_config()`, config only; its trainer is not implemented here): sequential MNIST
(784 steps), 1D, as in the paper's pixel-level 1D benchmarks, width 128, 4 blocks (verify against the
paper's Table of pixel-level results; the authors' code is unfinished).
"""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter
from inception_zoo.models import terminator
from inception_zoo.proto.protonet import calibrate_batch_stats
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="terminator_digits", data="digits", seed=0, views=("1d", "2d"), width=16, depth=2,
      local_sizes=(3, 5), slow_hidden=32, omega_0=10.0, cnn_width=dict(d1=64, d2=37), learning_rate=3e-3,
      batch_size=64, total_steps=150, log_every=50))
  if arg == "runlocal":
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = sequential MNIST)")
  c.update(name="terminator_smnist", data="tfds:mnist", views=("1d",), width=128, depth=4, total_steps=0)
  return c


def _views(x: np.ndarray, views) -> Dict[str, np.ndarray]:
  """The digits (N, 8, 8, 1) as 64-step sequences and as images."""
  out = {}
  for view in views:
    if view not in ("1d", "2d"):
      raise UserError(f"unknown view '{view}' (1d, 2d)")
    out[view] = x.reshape(len(x), -1, 1) if view == "1d" else x
  return out


def _models(config, view):
  return {"terminator": terminator.Terminator(10, config.width, config.depth, tuple(config.local_sizes),
                                              config.slow_hidden, config.omega_0),
          "cnn": terminator.PlainCNN(10, config.cnn_width[f"d{view[0]}"], config.depth)}


def _loss(model, x, y, batch_stats, batch_size):
  x, y = jnp.asarray(x), jnp.asarray(y)

  def loss_fn(params, key):
    # A random mini-batch per step (the step's key): the FFTs of 1,437 digits per step are too slow on CPU.
    # Batch standardisation uses the mini-batch's statistics; the running statistics are set after training.
    idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
    x_batch, y_batch = x[idx], y[idx]
    (logits, _), _ = model.apply({"params": params, **batch_stats}, x_batch, train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_batch).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y_batch)}
  return loss_fn


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  common.require_cpu_data(config, "digits")
  x_train, y_train = datasets.digits_arrays("train", flat=False)
  x_test, y_test = datasets.digits_arrays("test", flat=False)
  train_views, test_views = _views(x_train, config.views), _views(x_test, config.views)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  key = jax.random.key(config.seed)
  result: Dict[str, float] = {}
  curves, feature_stats = {}, {}
  for view in config.views:
    for name, model in _models(config, view).items():
      run_name = f"{name}_{view}"
      variables = jax.jit(model.init)(key, train_views[view][:2])
      params, batch_stats = variables["params"], {k: v for k, v in variables.items() if k != "params"}
      params, losses = fit(_loss(model, train_views[view], y_train, batch_stats, config.batch_size), params,
                           optax.adam(config.learning_rate), config.total_steps, has_aux=True,
                           key=jax.random.fold_in(key, 1), log_every=config.log_every, writer=writer,
                           prefix=f"{run_name}/train/")

      def evaluate(v, x_fit, x_eval, m=model):  # one compile: calibrate the statistics, then predict
        return m.apply(calibrate_batch_stats(m, v, x_fit) if "batch_stats" in v else v, x_eval)
      logits, features = jax.jit(evaluate)({"params": params, **batch_stats}, train_views[view], test_views[view])
      curves[run_name] = losses
      result[f"{run_name}/params"] = float(sum(p.size for p in jax.tree.leaves(params)))
      result[f"{run_name}/loss_first"], result[f"{run_name}/loss_last"] = float(losses[0]), float(losses[-1])
      result[f"{run_name}/accuracy"] = float(np.mean(np.argmax(logits, -1) == y_test))
      for block, f in features.items():
        f = np.asarray(f).reshape(-1, f.shape[-1])
        # Per channel over samples and positions: |mean| and std, averaged over the channels.
        result[f"{run_name}/{block}/abs_mean"] = float(np.mean(np.abs(f.mean(0))))
        result[f"{run_name}/{block}/std"] = float(np.mean(f.std(0)))
      feature_stats[run_name] = [(result[f"{run_name}/{b}/abs_mean"], result[f"{run_name}/{b}/std"])
                                 for b in features]
  writer.write(config.total_steps, result)
  writer.close()
  plot(curves, feature_stats, os.path.join(workdir, "terminator.png"))
  return result


def plot(curves: Dict[str, np.ndarray], feature_stats, path: str):
  plt = plots.pyplot()
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.5))
  for name, losses in curves.items():
    ax0.plot(losses, label=name)
  ax0.set_xlabel("step (mini-batch of 64)")
  ax0.set_ylabel("training cross-entropy")
  ax0.set_yscale("log")
  ax0.legend(fontsize=7)
  for name, stats in feature_stats.items():
    stats = np.asarray(stats)
    line, = ax1.plot(stats[:, 1], "o-", label=f"{name} std")
    ax1.plot(stats[:, 0], "x--", color=line.get_color(), label=f"{name} |mean|")
  ax1.axhline(1.0, color="grey", lw=0.5)
  ax1.axhline(0.0, color="grey", lw=0.5)
  ax1.set_xticks(range(len(stats)), [f"block {i + 1}" for i in range(len(stats))])
  ax1.set_xlabel("standardised pre-activation features, held-out digits")
  ax1.set_ylabel("per-channel statistic")
  ax1.legend(fontsize=6)
  plots.save(fig, path)


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
