"""The temperature-MoE driver: maximum-likelihood fits of both gates at growing n, all repetitions in one
vmapped full-batch Adam run, and the rate plot (README.md; the recipes are experiments/temperature_moe.py)."""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.temperature_moe import gaussian_moe as gm
from inception_zoo.utils import plots


def _true_params(config) -> gm.Params:
  return {k: jnp.asarray(v, jnp.float32) for k, v in config.true.to_dict().items()}


def _init(true: gm.Params, k: int, gate: str, noise: float, tau_noise: float, key) -> gm.Params:
  """The true atoms, the first one split into k - k* + 1 copies sharing its weight, perturbed."""
  k_true = true["b"].shape[0]
  if k < k_true:
    raise UserError(f"num_experts={k} is fewer than the {k_true} true experts")
  extra = k - k_true
  atoms = jnp.asarray([0] * (extra + 1) + list(range(1, k_true)))
  p = {name: v[atoms] if v.ndim else v for name, v in true.items()}
  split = jnp.log(1.0 + extra) * (p["tau"] if gate == "temperature" else 1.0)  # weight exp(beta0 [/ tau])
  p["beta0"] = p["beta0"].at[:extra + 1].add(-split)
  keys = jax.random.split(key, 6)
  out = {name: p[name] + noise * jax.random.normal(kk, p[name].shape)
         for name, kk in zip(("beta1", "beta0", "a", "b"), keys)}
  out["nu"] = p["nu"] * jnp.exp(noise * jax.random.normal(keys[4], p["nu"].shape))
  out["tau"] = p["tau"] * jnp.exp(tau_noise * jax.random.normal(keys[5], ()))
  out["beta1"] = out["beta1"].at[-1].set(0.0)  # the reference expert's gate
  out["beta0"] = out["beta0"].at[-1].set(0.0)
  return out


def rates(config, gate: str) -> Dict[str, np.ndarray]:
  """Voronoi losses (repetitions, sizes) of the MLE at every sample size (the best of `restarts` fits by
  likelihood), the initial ones, and the fitted tau's."""
  true = _true_params(config)
  sizes, reps, restarts = list(config.sample_sizes), config.repetitions, config.restarts
  xs, ys, index, inits = [], [], [], []
  for r in range(reps):  # nested samples: the first n points of one big sample per repetition
    x, y = gm.sample(jax.random.fold_in(jax.random.key(config.seed), r), true, max(sizes), gate)
    for n in sizes:
      for _ in range(restarts):
        xs.append(x[:n])
        ys.append(y[:n])
        index.append(jnp.full((n,), len(inits)))
        key = jax.random.fold_in(jax.random.key(config.seed + 1), len(inits))
        inits.append(_init(true, config.num_experts, gate, config.init_noise, config.tau_init_noise, key))
  init = jax.tree.map(lambda *v: jnp.stack(v), *inits)
  fitted, nll = gm.fit_mle(init, jnp.concatenate(xs), jnp.concatenate(ys), jnp.concatenate(index), gate,
                           steps=config.total_steps, lr=config.lr)
  shape = (reps, len(sizes), restarts)
  best = np.argmin(np.asarray(nll).reshape(shape), axis=-1)[..., None]
  loss = jax.vmap(lambda p: gm.voronoi_loss(p, true, gate))

  def pick(v):
    return np.take_along_axis(np.asarray(v).reshape(shape), best, axis=-1)[..., 0]

  return {"loss": pick(loss(fitted)), "init_loss": pick(loss(init)), "tau": pick(fitted["tau"])}


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  sizes = np.asarray(config.sample_sizes, np.float64)
  result: Dict[str, float] = {}
  curves = {}
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  for gate in gm.GATES:
    r = rates(config, gate)
    median = np.median(r["loss"], axis=0)
    curves[gate] = median
    slope, intercept = np.polyfit(np.log(sizes), np.log(median), 1)
    result[f"{gate}/slope"] = float(slope)
    result[f"{gate}/intercept"] = float(intercept)
    result[f"{gate}/median_init_loss"] = float(np.median(r["init_loss"]))
    for n, m, tau in zip(config.sample_sizes, median, np.median(np.abs(r["tau"] - config.true.tau), axis=0)):
      result[f"{gate}/loss/n{n}"] = float(m)
      result[f"{gate}/tau_error/n{n}"] = float(tau)
  writer.write(config.total_steps, result)
  writer.close()
  plot(sizes, curves, result, os.path.join(workdir, "temperature_moe_rates.png"))
  return result


def plot(sizes, curves, result, path: str):
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for gate, median in curves.items():
    line = ax.loglog(sizes, median, "o", label=f"{gate} gate (slope {result[f'{gate}/slope']:.2f})")
    fitted = np.exp(result[f"{gate}/intercept"]) * sizes ** result[f"{gate}/slope"]
    ax.loglog(sizes, fitted, "--", color=line[0].get_color())
  ax.set_xlabel("sample size n")
  ax.set_ylabel("Voronoi loss to the truth (median)")
  ax.legend(fontsize=8)
  plots.save(fig, path)
