"""wide_deep_ntk's experiment driver (README.md; the recipes are experiments/wide_deep_ntk.py)."""
import math
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.neighbors import KNeighborsClassifier

from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.wide_deep_ntk import ntk_depth
from inception_zoo.utils import plots


def sample(rng: np.random.Generator, n: int, config) -> tuple:
  """n points uniform on S^d, labels in {-1, +1} with P(+1) = eta on the cap x_0 > cap, 1 - eta off it."""
  x = rng.normal(size=(n, config.sphere_dim + 1))
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  p = np.where(x[:, 0] > config.cap, config.eta, 1.0 - config.eta)
  return x, np.where(rng.random(n) < p, 1.0, -1.0)


def duals(config) -> Dict[str, ntk_depth.Dual]:
  d = config.sphere_dim
  return {
      "relu": ntk_depth.relu_dual(),
      "nearest": ntk_depth.hermite_dual([0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)], "h2+h3"),
      "singular": ntk_depth.hermite_dual(ntk_depth.consistent_activation(d), f"alpha={d}"),
      "singular_2d": ntk_depth.hermite_dual(ntk_depth.consistent_activation(2 * d), f"alpha={2 * d}"),
  }


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  if config.sphere_dim < 1 or not 0.5 < config.eta <= 1.0:
    raise UserError(f"need sphere_dim >= 1 and 0.5 < eta <= 1, got {config.sphere_dim}, {config.eta}")
  with jax.enable_x64(True):
    result = _run(config)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  writer.write(0, result)
  writer.close()
  plot(config, result, os.path.join(workdir, "wide_deep_ntk.png"))
  return result


def _run(config) -> Dict[str, float]:
  rng = np.random.default_rng(config.seed)
  ds = duals(config)
  result: Dict[str, float] = {"bayes_error": 1.0 - config.eta}
  for name, dual in ds.items():
    limit = ntk_depth.taxonomy(dual)
    result[f"{name}/alpha"] = limit.alpha
  x_test, y_test = sample(rng, config.num_test, config)
  xt = jnp.asarray(x_test)

  # 1. Finite depth -> the predicted limit, on one small training set.
  x, y = sample(rng, config.depth_train, config)
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  references = {
      "relu": DummyClassifier(strategy="most_frequent").fit(x, y).predict(x_test),
      "nearest": KNeighborsClassifier(1).fit(x, y).predict(x_test),
      "singular": np.asarray(ntk_depth.limit_predict(xj, yj, xt, ds["singular"], config.koenigs_iterations)),
  }
  for name, depths in (("relu", config.relu_depths), ("nearest", config.nn_depths),
                       ("singular", config.singular_depths)):
    for depth in depths:
      pred = np.asarray(ntk_depth.ntk_predict(xj, yj, xt, ds[name], depth))
      result[f"{name}/agreement@L{depth}"] = float(np.mean(pred == references[name]))
  result["relu/limit_matches_dummy"] = float(np.mean(
      np.asarray(ntk_depth.limit_predict(xj, yj, xt, ds["relu"])) == references["relu"]))
  result["nearest/limit_matches_knn"] = float(np.mean(
      np.asarray(ntk_depth.limit_predict(xj, yj, xt, ds["nearest"])) == references["nearest"]))

  # 2. Test error of the limit classifiers against n.
  for n in config.train_sizes:
    errors: Dict[str, list] = {}
    for _ in range(config.draws):
      x, y = sample(rng, n, config)
      xj, yj = jnp.asarray(x), jnp.asarray(y)
      errors.setdefault("knn", []).append(np.mean(KNeighborsClassifier(1).fit(x, y).predict(x_test) != y_test))
      errors.setdefault("majority", []).append(
          np.mean(DummyClassifier(strategy="most_frequent").fit(x, y).predict(x_test) != y_test))
      for name in ("singular", "singular_2d"):
        pred = ntk_depth.limit_predict(xj, yj, xt, ds[name], config.koenigs_iterations)
        errors.setdefault(name, []).append(float(jnp.mean(pred != y_test)))
    for name, errs in errors.items():
      result[f"{name}/error@n{n}"] = float(np.mean(errs))
  return result


def plot(config, result: Dict[str, float], path: str):
  plt = plots.pyplot()
  ns = list(config.train_sizes)
  d = config.sphere_dim
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for name, label in (("singular", f"singular NTK limit, alpha = d = {d} (Hilbert kernel)"),
                      ("singular_2d", f"singular NTK limit, alpha = {2 * d}"),
                      ("knn", "1-NN (= NTK limit of a_2 h_2 + a_3 h_3)"),
                      ("majority", "majority vote (= deep ReLU NTK limit)")):
    ax.plot(ns, [result[f"{name}/error@n{n}"] for n in ns], "o-", label=label)
  ax.axhline(result["bayes_error"], color="k", ls="--", label="Bayes error")
  ax.set_xscale("log")
  ax.set_xlabel("training points n")
  ax.set_ylabel(f"test error (S^{d}, {config.num_test} points)")
  ax.legend(fontsize=7)
  plots.save(fig, path)
