"""mip_hypernet's experiment driver (README.md; the recipes are experiments/mip_hypernet.py)."""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.data import datasets
from inception_zoo.metrics import MetricWriter
from inception_zoo.models.mlp import MLP
from inception_zoo.projects.mip_hypernet.hypernet import HyperNet, parameter_norm
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots

METHODS = {"mip": dict(encoding="cos|sin", additive=True), "baseline": dict(encoding=None, additive=False)}


def regularised_loss(hyper: HyperNet, variables, gamma, x, y, config):
  """CE of the primary network with theta(gamma) plus lambda(gamma) |theta|^2: the conditioned loss."""
  theta = hyper.apply(variables, gamma[None])
  logits = hyper.primary.apply({"params": theta}, x)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  lo, hi = config.log10_lambda
  return ce + 10.0 ** (lo + (hi - lo) * gamma) * parameter_norm(theta) ** 2


def train(config, method: str, lr: float, x, y, workdir: str):
  """Trains `config.seeds` hypernetworks side by side; returns (variables stacked over seeds, losses)."""
  primary = MLP(10, (config.width,), hidden_name="fc")  # 64 -> width -> 10, layers fc and head
  hyper = HyperNet(primary, (x.shape[1],), hidden=config.hidden, **METHODS[method])
  variables = jax.vmap(lambda k: hyper.init(k, jnp.zeros((1,))))(jax.random.split(jax.random.key(0), config.seeds))
  per_gamma = jax.vmap(regularised_loss, in_axes=(None, None, 0, None, None, None))

  def loss_fn(variables, key):
    gammas = jax.random.uniform(key, (config.seeds, config.gammas_per_step))
    losses = jax.vmap(lambda v, g: per_gamma(hyper, v, g, x, y, config).mean())(variables, gammas)
    return losses.sum(), {"loss_spread": losses.std()}  # Adam is per parameter: the seeds stay independent

  writer = MetricWriter(os.path.join(workdir, f"{method}_lr{lr:g}"), tensorboard=False)
  variables, history = fit(loss_fn, variables, optax.adam(lr), config.total_steps, has_aux=True,
                           log_every=50, writer=writer)
  return hyper, variables, history / config.seeds


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  x, y = datasets.digits_arrays("train")
  x_test, y_test = datasets.digits_arrays("test")
  grid = jnp.linspace(0.0, 1.0, 5)
  result: Dict[str, float] = {}
  curves = {}
  for method in METHODS:
    for lr in config.learning_rates:
      hyper, variables, history = train(config, method, lr, x, y, workdir)
      curves[method, lr] = history
      reached = np.flatnonzero(history < config.target_loss)
      result[f"{method}/lr{lr:g}/steps_to_target"] = float(reached[0] + 1 if reached.size else np.inf)
      test = jax.vmap(lambda v: jax.vmap(lambda g: regularised_loss(hyper, v, g, x_test, y_test, config))(grid).mean())
      per_seed = np.asarray(test(variables))
      result[f"{method}/lr{lr:g}/test_loss"] = float(per_seed.mean())
      result[f"{method}/lr{lr:g}/test_loss_std"] = float(per_seed.std())
    init = hyper.init(jax.random.key(0), jnp.zeros((1,)))
    for g in (0.1, 1.0):
      result[f"{method}/init_norm/gamma{g:g}"] = float(parameter_norm(hyper.apply(init, jnp.array([g]))))
  plot(config, curves, os.path.join(workdir, "mip_convergence.png"))
  return result


def plot(config, curves, path: str):
  plt = plots.pyplot()
  lrs = config.learning_rates
  fig, axes = plt.subplots(1, len(lrs), figsize=(3.2 * len(lrs), 3), sharey=True)
  for ax, lr in zip(np.atleast_1d(axes), lrs):
    for method in METHODS:
      ax.plot(np.arange(1, len(curves[method, lr]) + 1), curves[method, lr], label=method)
    ax.set_title(f"Adam lr {lr:g}")
    ax.set_xlabel("step")
    ax.set_yscale("log")
  np.atleast_1d(axes)[0].set_ylabel(f"training loss (mean of {config.seeds} seeds)")
  np.atleast_1d(axes)[0].legend()
  plots.save(fig, path)
