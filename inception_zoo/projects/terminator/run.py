"""terminator's experiment driver (README.md; the recipes are experiments/terminator.py)."""
import os
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.terminator import terminator
from inception_zoo.train.fullbatch import fit
from inception_zoo.train.state import calibrate_batch_stats
from inception_zoo.utils import plots


def pixel_permutation(config) -> np.ndarray | None:
  """pMNIST's fixed permutation of the sequence positions (None: the raster order)."""
  return np.random.default_rng(config.permutation_seed).permutation(28 * 28) if config.permute else None


def load_views(config, split: str) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
  """The split's images (N, H, W) in [0, 1] as sequences (N, H * W, 1), the row-major raster (pixel
  (r, c) at step r * W + c) or its fixed permutation, and as images (N, H, W, 1); int32 labels."""
  images, labels = datasets.grey_images(config.data, split)
  permutation = pixel_permutation(config)
  out = {}
  for view in config.views:
    if view not in ("1d", "2d"):
      raise UserError(f"unknown view '{view}' (1d, 2d)")
    if view == "2d":
      out[view] = images[..., None]
      continue
    sequence = images.reshape(len(images), -1)
    if permutation is not None:
      if permutation.size != sequence.shape[1]:
        raise UserError(f"permute needs 28x28 images (tfds:mnist); got {images.shape[1:]}")
      sequence = sequence[:, permutation]
    out[view] = sequence[..., None]
  return out, labels


def _models(config, view):
  models = {"terminator": terminator.Terminator(10, config.width, config.depth, tuple(config.local_sizes),
                                                config.slow_hidden, config.omega_0),
            "cnn": terminator.PlainCNN(10, config.cnn_width[f"d{view[0]}"], config.depth)}
  unknown = set(config.models) - set(models)
  if unknown:
    raise UserError(f"unknown model '{sorted(unknown)[0]}' (terminator, cnn)")
  return {name: models[name] for name in config.models}


def evaluate(model, variables, x_fit, x_eval, batch_size: int):
  """Logits of `x_eval` (in chunks of `batch_size`) with the batch statistics set to those of `x_fit`,
  and per block the per-channel feature sums (count, sum, sum of squares) over samples and positions."""
  if "batch_stats" in variables:
    variables = jax.jit(lambda v, x: calibrate_batch_stats(model, v, x))(variables, x_fit)

  @jax.jit
  def chunk(variables, x):
    logits, features = model.apply(variables, x)
    moments = {b: jnp.stack([jnp.full(f.shape[-1:], f.size / f.shape[-1]), f.sum(range(f.ndim - 1)),
                             jnp.square(f).sum(range(f.ndim - 1))]) for b, f in features.items()}
    return logits, moments

  logits, moments = [], None
  for start in range(0, len(x_eval), batch_size):
    out, m = chunk(variables, x_eval[start:start + batch_size])
    logits.append(np.asarray(out))
    moments = m if moments is None else jax.tree.map(jnp.add, moments, m)
  return np.concatenate(logits), {b: np.asarray(m, np.float64) for b, m in moments.items()}


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
  train_views, y_train = load_views(config, "train")
  test_views, y_test = load_views(config, "test")
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
      x_fit = train_views[view][:config.calibration or None]
      logits, moments = evaluate(model, {"params": params, **batch_stats}, x_fit, test_views[view],
                                 config.eval_batch_size)
      curves[run_name] = losses
      result[f"{run_name}/params"] = float(sum(p.size for p in jax.tree.leaves(params)))
      result[f"{run_name}/loss_first"], result[f"{run_name}/loss_last"] = float(losses[0]), float(losses[-1])
      result[f"{run_name}/accuracy"] = float(np.mean(np.argmax(logits, -1) == y_test))
      for block, (count, total, squares) in moments.items():
        # Per channel over samples and positions: |mean| and std, averaged over the channels.
        mean = total / count
        result[f"{run_name}/{block}/abs_mean"] = float(np.mean(np.abs(mean)))
        result[f"{run_name}/{block}/std"] = float(np.mean(np.sqrt(np.maximum(squares / count - mean ** 2, 0))))
      feature_stats[run_name] = [(result[f"{run_name}/{b}/abs_mean"], result[f"{run_name}/{b}/std"])
                                 for b in moments]
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
