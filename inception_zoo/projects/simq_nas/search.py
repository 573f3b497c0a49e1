"""SimQ-NAS's search: joint architecture + quantisation-policy encoding, measurements, light predictors and
NSGA-II over them.

Sridhar, Szankin, Chen, Sundaresan, Sarah, "SimQ-NAS: Simultaneous Quantization Policy and Neural
Architecture Search", arXiv:2312.13301, 2023, built on Intel Labs' DyNAS-T: measure a few hundred random
subnets, fit lightly trained predictors of each objective, run NSGA-II (pymoo's) on the predictors, measure
the predicted front, refit on everything measured and search again from the best measured candidates.

- `SearchSpace`: integer genes = depth per stage, width index per stage, expansion index per block and,
  for the joint search, one bit-width index per layer (genes of skipped layers are inert).
- Accuracy is measured on the masked, post-training-quantised supernet: one compiled calibration and one
  compiled evaluation for every subnet and policy.
- Latency is measured on this CPU per layer, as OFA's latency lookup table: dense layers of the deployed
  form (`quant.policy.integer_dense`, or a float product) are timed at a few shapes, a per-kernel cost
  model in the multiply-adds is fitted to them, and a subnet's latency is the sum over its layers (our
  reading: timing every subnet, or every layer shape, compiles one function per shape, seconds each
  here; `end_to_end_latency` checks the sum against whole deployed subnets). Size is exact
  (`quant.policy.size_bits`), so it needs no predictor.
"""
import functools
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.indicators.hv import HV
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.optimize import minimize
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from inception_zoo.errors import UserError
from inception_zoo.projects.simq_nas import supernet
from inception_zoo.quant import policy


class SearchSpace:
  """Integer genes of `net`'s subnets (`net.arch_space()`, in its order), with a per-layer bit-width gene
  from `bit_choices` (None: FP32)."""

  def __init__(self, net, bit_choices: Optional[Sequence[int]] = None):
    if bit_choices is not None:
      policy.check_bits(bit_choices)
    self.net, self.bit_choices = net, None if bit_choices is None else tuple(bit_choices)
    self.num_layers = len(net.layer_names())
    self.genes = [(k, shape, np.asarray(values)) for k, (shape, values) in net.arch_space().items()]
    upper = [np.full(int(np.prod(shape)), len(values) - 1) for _, shape, values in self.genes]
    upper += [] if bit_choices is None else [np.full(self.num_layers, len(bit_choices) - 1)]
    self.upper = np.concatenate(upper)

  def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, self.upper + 1, size=(n, len(self.upper)))

  def decode(self, genes) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """(arch with a leading candidate axis, bits (candidates, layers))."""
    g = np.asarray(genes, np.int64).reshape(-1, len(self.upper))
    arch, start = {}, 0
    for key, shape, values in self.genes:
      size = int(np.prod(shape))
      arch[key] = values[g[:, start:start + size]].reshape(-1, *shape)
      start += size
    bits = (np.full((len(g), self.num_layers), policy.FULL) if self.bit_choices is None
            else np.asarray(self.bit_choices)[g[:, start:]])
    return arch, bits

  def features(self, genes, input_size: int) -> np.ndarray:
    """Predictor inputs: the arch genes' values, then per layer its multiply-adds and bits (0 when the
    subnet skips it)."""
    arch, bits = self.decode(genes)
    fan_in, fan_out, active, positions = supernet.layer_shapes(self.net, arch, input_size)
    return np.concatenate([a.reshape(len(bits), -1) for a in arch.values()]
                          + [fan_in * fan_out * positions * active, bits * active], axis=1).astype(np.float64)


def accuracy_fn(net, x_cal, x, y, chunk: int = 16, eval_batch: Optional[int] = None) -> Callable:
  """f(variables, arch, bits) -> top-1 per candidate: calibrate each subnet on `x_cal` in full precision
  (input ranges, and BN statistics where the net has them), quantise it with its policy, evaluate on
  (x, y), `eval_batch` rows at a time (None: all at once). Candidates go through `chunk` at a time (one
  compile)."""
  eval_batch = eval_batch or len(y)
  calibrate = jax.jit(jax.vmap(lambda v, a: supernet.calibrate(net, v, a, x_cal), in_axes=(None, 0)))

  @jax.jit
  @functools.partial(jax.vmap, in_axes=(None, 0, None, None, 0, 0))
  def correct(variables, calibration, xb, yb, arch, bits):
    return jnp.sum(jnp.argmax(supernet.predict(net, variables, calibration, xb, arch, bits), -1) == yb)

  def evaluate(variables, arch, bits) -> np.ndarray:
    n = len(bits)
    pad = -n % chunk  # repeat the last candidate so every call has the compiled shape
    arch = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) for k, v in arch.items()}
    bits = np.concatenate([bits, np.repeat(bits[-1:], pad, 0)])
    out = []
    for i in range(0, n + pad, chunk):
      a, b = {k: v[i:i + chunk] for k, v in arch.items()}, bits[i:i + chunk]
      calibration = calibrate(variables, a)
      hits = sum(np.asarray(correct(variables, calibration, x[j:j + eval_batch], y[j:j + eval_batch], a, b))
                 for j in range(0, len(y), eval_batch))
      out.append(hits / len(y))
    return np.concatenate(out)[:n]

  return evaluate


def _min_time(fn, x, repeats: int) -> float:
  """Fastest of `repeats` timed runs after a warm-up: other processes on the CPU only ever add time, so
  the minimum is the least disturbed estimate of the kernel's own cost."""
  jax.block_until_ready(fn(x))  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(x))
    times.append(time.perf_counter() - start)
  return float(np.min(times))


class LatencyModel:
  """Seconds of a deployed layer (+ ReLU) on `batch` examples on this machine, for FP32 and for the INT8
  kernel. `shapes` are (positions, fan_in, fan_out) per layer: a dense layer has one position per
  example; a convolution is timed as its im2col product, (batch x output pixels, k x k x in) by
  (k x k x in, out) (our reading: XLA has no int8 convolution kernel on every backend, and the product
  has the convolution's multiply-adds). `samples` shapes per kernel, spread over the search space's
  shapes by multiply-adds, are timed (fastest of `repeats` runs), and t = c0 + c1 MACs + c2 rows
  (fan_in + fan_out) is fitted by non-negative least squares per kernel (timing every shape would
  compile one function per shape)."""

  def __init__(self, shapes: np.ndarray, *, batch: int = 256, samples: int = 6, repeats: int = 7,
               seed: int = 0):
    shapes = np.unique(np.asarray(shapes, np.int64).reshape(-1, 3), axis=0)
    shapes = shapes[np.argsort(shapes.prod(1), kind="stable")]
    picked = shapes[np.unique(np.linspace(0, len(shapes) - 1, min(samples, len(shapes))).round().astype(int))]
    rng = np.random.default_rng(seed)
    self.batch, self.measured, self.coef = batch, {}, {}
    for quantised in (False, True):
      times = [self._time(int(p), int(i), int(o), quantised, rng, repeats) for p, i, o in picked]
      self.measured[quantised] = (picked, np.asarray(times))
      self.coef[quantised] = scipy.optimize.nnls(self._design(*picked.T), np.asarray(times))[0]

  def _design(self, positions, fan_in, fan_out):
    fan_in, fan_out = np.asarray(fan_in, np.float64), np.asarray(fan_out, np.float64)
    rows = self.batch * np.asarray(positions, np.float64)
    return np.stack([np.ones_like(fan_in * rows), rows * fan_in * fan_out * 1e-6, rows * (fan_in + fan_out) * 1e-3],
                    -1)

  def _time(self, positions: int, fan_in: int, fan_out: int, quantised: bool, rng, repeats: int) -> float:
    x = jnp.asarray(rng.uniform(0, 1, (self.batch * positions, fan_in)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in), jnp.float32)
    bias = jnp.zeros((fan_out,))
    if quantised:
      packed, act_range = policy.pack_weight(kernel, 8), jnp.array([0.0, 1.0])
      fn = jax.jit(lambda x: jax.nn.relu(policy.integer_dense(x, packed, bias, 8, act_range)))
    else:
      fn = jax.jit(lambda x: jax.nn.relu(x @ kernel + bias))
    return _min_time(fn, x, repeats)

  def latency(self, fan_in, fan_out, active, bits, positions=1) -> np.ndarray:
    """One call's overhead plus, over the active layers (last axis), the fitted per-layer costs; the
    intercept is the dispatch of one compiled call, paid once by a whole network, so it is not summed.
    INT4 layers run the INT8 kernel."""
    design = self._design(positions, fan_in, fan_out)[..., 1:]
    per_layer = np.where(np.asarray(bits) < policy.FULL, design @ self.coef[True][1:], design @ self.coef[False][1:])
    overhead = (self.coef[True][0] + self.coef[False][0]) / 2
    return overhead + (per_layer * np.asarray(active, bool)).sum(-1)


def end_to_end_latency(net: supernet.ElasticMLP, params, arch, bits, ranges, batch: int = 1024,
                       repeats: int = 15) -> float:
  """Seconds of the whole deployed subnet (sliced weights, int8 kernels for quantised layers)."""
  names = net.layer_names()
  layers = supernet.subnet_layers(net, params, arch)
  bits = {n: int(b) for n, b in zip(names, bits)}
  ranges = dict(zip(names, ranges))
  layers = {n: (policy.pack_weight(k, 8) if bits[n] < policy.FULL else k, b) for n, (k, b) in layers.items()}
  in_features = params[names[0]]["kernel"].shape[0]
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (batch, in_features)), jnp.float32)
  fn = jax.jit(lambda x: supernet.dense_forward(net, layers, arch, x, bits, ranges, integer=True))
  return _min_time(fn, x, repeats)


def fit_predictor(features: np.ndarray, target: np.ndarray, kind: str = "gbm", seed: int = 0):
  """A lightly trained sklearn regressor (DyNAS-T's predictor families)."""
  from sklearn.ensemble import GradientBoostingRegressor
  from sklearn.linear_model import RidgeCV
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  makers = {"gbm": lambda: GradientBoostingRegressor(n_estimators=100, max_depth=3, learning_rate=0.1,
                                                     subsample=0.8, random_state=seed),
            "ridge": lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))}
  if kind not in makers:
    raise UserError(f"unknown predictor '{kind}' ({', '.join(makers)})")
  return makers[kind]().fit(features, target)


class _Objectives(Problem):

  def __init__(self, space: SearchSpace, objectives: Callable[[np.ndarray], np.ndarray], num_objectives: int):
    super().__init__(n_var=len(space.upper), n_obj=num_objectives, xl=np.zeros(len(space.upper)),
                     xu=space.upper.astype(float), vtype=int)
    self.objectives = objectives

  def _evaluate(self, x, out, *args, **kwargs):
    out["F"] = self.objectives(np.round(x).astype(np.int64))


def best_measured(genes: np.ndarray, measured: np.ndarray, n: int) -> np.ndarray:
  """The `n` candidates of the best non-domination ranks of their measured objectives: the next
  search's starting population (DyNAS-T's iterations start from what was measured)."""
  order = np.concatenate(NonDominatedSorting().do(np.asarray(measured, np.float64)))
  return np.asarray(genes)[order[:n]]


def nsga2(space: SearchSpace, objectives: Callable[[np.ndarray], np.ndarray], num_objectives: int, *,
          pop_size: int = 50, generations: int = 30, seed: int = 0,
          initial: Optional[np.ndarray] = None) -> np.ndarray:
  """pymoo's NSGA-II over the integer genes (SBX and polynomial mutation with rounding, pymoo's recipe
  for integer variables); `objectives(genes (n, genes)) -> (n, objectives)`, all minimised; `initial`
  genes start the population (random ones otherwise). Returns the genes of the final non-dominated set."""
  sampling = IntegerRandomSampling() if initial is None else np.asarray(initial, np.float64)
  algorithm = NSGA2(pop_size=pop_size, sampling=sampling,
                    crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                    mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                    eliminate_duplicates=True)
  result = minimize(_Objectives(space, objectives, num_objectives), algorithm, ("n_gen", generations),
                    seed=seed, verbose=False)
  return np.unique(np.round(np.atleast_2d(result.X)).astype(np.int64), axis=0)


def hypervolume(points: np.ndarray, ref_point: np.ndarray) -> float:
  """Hypervolume dominated by `points` (minimised objectives) up to `ref_point` (pymoo's indicator)."""
  return float(HV(ref_point=np.asarray(ref_point, np.float64))(np.asarray(points, np.float64)))
