"""Wide and deep NTK classifiers (Radhakrishnan, Belkin, Uhler, "Wide and Deep Neural Networks Achieve
Optimality for Classification", arXiv:2204.14126, 2022), paper 20 of the zoo.

Claims reproduced (the taxonomy theorem and the optimality corollary), on a generated two-class
distribution on the sphere S^d with a known Bayes error: x uniform on S^d in R^(d+1), P(y = +1 | x) = 0.9
on the cap x_0 > 0.3 and 0.1 elsewhere, so the Bayes error is exactly 0.1 (a 1-NN rule tends to
2 * 0.1 * 0.9 = 0.18, a majority vote to P(y = +1) = 0.38 on S^2).
  1. Infinitely wide networks, trained to convergence, become at large depth one of three classifiers set
     by the activation (`inception_zoo.theory.ntk_depth.taxonomy`): the ReLU network's predictions meet
     majority vote (scikit-learn's DummyClassifier) as the depth grows, those of phi = a_2 h_2 + a_3 h_3
     meet 1-nearest neighbour (KNeighborsClassifier(1)), and those of the paper's kind of activation
     (phi = a_1 h_1 + a_4 h_4 with alpha = d) meet its singular-kernel limit.
  2. The singular-kernel network with alpha = d (Hilbert kernel) approaches the Bayes error as n grows,
     while 1-NN stays above it (near 0.18) and majority vote at 0.38; a more singular kernel (alpha = 2d)
     sits in between. Plot: error vs n per activation with the Bayes line, WORKDIR/wide_deep_ntk.png.
  python -m experiments.wide_deep_ntk --config=runlocal --workdir=workdirs/wide_deep_ntk
CPU time here: about 15 s of CPU (12 s wall; 28-40 s while other jobs shared the 2 cores). Measured
(S^2, 1,000 test points, mean of 2 draws per n): agreement of the finite-depth NTK classifier with its
predicted limit on 100 training points: ReLU vs majority vote 0.713 / 0.664 / 0.741 / 0.993 at depth
1 / 10 / 100 / 1000;
a_2 h_2 + a_3 h_3 vs 1-NN 0.529 / 0.98 / 1.0 at depth 2 / 4 / 8; alpha = 2 vs its singular limit 0.977 /
0.989 / 0.995 at depth 10 / 100 / 300 (the limits themselves equal DummyClassifier / 1-NN on every point).
Test error at n = 100 / 300 / 1000 / 3000: alpha = d = 2 0.148 / 0.137 / 0.116 / 0.117 (Bayes 0.1),
alpha = 4 0.200 / 0.186 / 0.160 / 0.168, 1-NN 0.188 / 0.201 / 0.185 / 0.188, majority vote 0.353.
On S^4 (one draw, 1,000 test points) alpha = 4 gave 0.258 / 0.175 / 0.159 at n = 100 / 1000 / 3000 and
1-NN 0.231 / 0.212 / 0.231: the Hilbert-kernel rule converges more slowly in higher dimension.

Data: generated (numpy, seeded). Kernels in float64 (`jax.enable_x64`): deep kernels differ from 1 by
less than float32 resolves. The finite-depth NTK classifier solves the kernel system on the training set
(gradient flow on the square loss to convergence); the limits use ntk_depth.limit_predict.

Full setting (`get_config()`): S^4 in R^5 (alpha = 4), n from 100 to 20,000 (the range of the zoo's paper
list), 5,000 test points, 5 draws; the depth checks on 300 training points, ReLU up to depth 3,000, the
singular network up to depth 100 (beyond it its off-diagonal kernel, ~(a_1^2 / rho)^L, underflows float64).
"""
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
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter
from inception_zoo.theory import ntk_depth
from inception_zoo.utils import plots


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="wide_deep_ntk", seed=0, sphere_dim=2, cap=0.3, eta=0.9, num_test=1000, draws=2,
      train_sizes=(100, 300, 1000, 3000), depth_train=100, relu_depths=(1, 10, 100, 1000),
      nn_depths=(2, 4, 8), singular_depths=(10, 100, 300), koenigs_iterations=60))
  if arg == "runlocal":
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none for the full setting)")
  c.update(name="wide_deep_ntk_full", sphere_dim=4, num_test=5000, draws=5,
           train_sizes=(100, 300, 1000, 3000, 10000, 20000), depth_train=300,
           relu_depths=(1, 10, 100, 1000, 3000), singular_depths=(10, 30, 100))
  return c


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
