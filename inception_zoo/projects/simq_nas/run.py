"""simq_nas's experiment driver (README.md; the recipes are experiments/simq_nas.py)."""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.simq_nas import search, supernet
from inception_zoo.projects.simq_nas import supernet_task as supernet_training
from inception_zoo.quant import policy
from inception_zoo.train import classification
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots

OBJECTIVES = ("error", "latency_ms", "size_kib")


def train(net: supernet.ElasticMLP, config, x, y, writer: MetricWriter):
  """Sandwich-rule training of the shared weights on random mini-batches (`fit` scans the steps)."""
  params = jax.jit(net.init)(jax.random.key(config.seed), x[:1], supernet.extreme_arch(net, True))["params"]

  def loss_fn(params, key):
    batch_key, arch_key = jax.random.split(key)
    idx = jax.random.randint(batch_key, (config.batch_size,), 0, len(x))
    return supernet.sandwich_loss(net, params, x[idx], y[idx], arch_key, config.num_random)

  tx = optax.adam(optax.cosine_decay_schedule(config.learning_rate, config.total_steps))
  params, _ = fit(loss_fn, params, tx, config.total_steps, key=jax.random.key(config.seed + 1), has_aux=True,
                  log_every=config.log_every, writer=writer, progress=True)
  return params


def digits_supernet(config, writer: MetricWriter):
  """The CPU setting: the elastic MLP trained on the digits; (net, variables, calibration images,
  held-out images and labels, input features)."""
  x, y = map(jnp.asarray, datasets.digits_arrays("train"))
  x_eval, y_eval = map(jnp.asarray, datasets.digits_arrays("test"))
  s = config.supernet
  net = supernet.ElasticMLP(widths=tuple(s.widths), expansions=tuple(s.expansions), stages=s.stages,
                            max_depth=s.max_depth)
  params = train(net, config, x, y, writer)
  return net, {"params": params}, x[:config.calibration], x_eval, y_eval, x.shape[1]


def _images(source, preprocess, indices):
  examples = [preprocess(source[int(i)], np.random.default_rng(0)) for i in indices]
  return np.stack([e["image"] for e in examples]), np.asarray([e["label"] for e in examples], np.int32)


def imagenet_supernet(config, workdir: str):
  """The full setting: the elastic ResNet-50 trained (or resumed) by the classification trainer's loop,
  then restored with `calibration` random training images and the first `search.eval_images` validation
  images, both center-cropped (pp_eval)."""
  classification.train_and_evaluate(config, workdir, supernet_training.SUPERNET)
  s = classification.Setup(config, workdir, supernet_training.SUPERNET)
  s.checkpoints.close()
  variables = jax.device_get({"params": classification.eval_params(s.state, config),
                              "batch_stats": s.state.batch_stats})
  rng = np.random.default_rng(config.seed)
  x_cal, _ = _images(s.train_data.source, s.pp_eval,
                     rng.choice(len(s.train_data), min(config.calibration, len(s.train_data)), replace=False))
  x_eval, y_eval = _images(s.eval_data.source, s.pp_eval, range(min(config.search.eval_images, len(s.eval_data))))
  return s.model, variables, jnp.asarray(x_cal), x_eval, y_eval, s.image_shape[0]


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  if config.supernet.kind == "elastic_resnet":  # its trainer writes the workdir's metrics first
    net, variables, x_cal, x_eval, y_eval, input_size = imagenet_supernet(config, workdir)
    writer = MetricWriter(workdir)
  elif config.supernet.kind == "elastic_mlp":
    writer = MetricWriter(workdir)
    net, variables, x_cal, x_eval, y_eval, input_size = digits_supernet(config, writer)
  else:
    raise UserError(f"unknown supernet '{config.supernet.kind}' (elastic_mlp, elastic_resnet)")
  writer.write_config(config)
  accuracy = search.accuracy_fn(net, x_cal, x_eval, y_eval, config.search.chunk, config.search.eval_batch or None)
  rng = np.random.default_rng(config.seed)
  joint, arch_only = search.SearchSpace(net, config.bits), search.SearchSpace(net, None)
  fan_in, fan_out, active, positions = supernet.layer_shapes(net, arch_only.decode(arch_only.sample(rng, 500))[0],
                                                             input_size)
  latency = search.LatencyModel(np.stack([positions[active], fan_in[active], fan_out[active]], -1),
                                batch=config.latency.batch, samples=config.latency.samples,
                                repeats=config.latency.repeats, seed=config.seed)

  def cost(space, genes, bits=None):
    """(latency ms, size KiB) of candidates; `bits` overrides the policy of every layer."""
    arch, policy_bits = space.decode(genes)
    policy_bits = policy_bits if bits is None else np.full_like(policy_bits, bits)
    fi, fo, on, pos = supernet.layer_shapes(net, arch, input_size)
    return np.stack([latency.latency(fi, fo, on, policy_bits, pos) * 1e3,
                     policy.size_bits(fi, fo, policy_bits, on) / 8 / 1024], -1)

  def measure(space, genes, bits=None):
    arch, policy_bits = space.decode(genes)
    policy_bits = policy_bits if bits is None else np.full_like(policy_bits, bits)
    return np.column_stack([1 - accuracy(variables, arch, policy_bits), cost(space, genes, bits)])

  result: Dict[str, float] = {}
  fronts, samples = {}, {}
  for name, space in (("joint", joint), ("baseline", arch_only)):
    genes = space.sample(rng, config.search.samples)
    measured = measure(space, genes)
    samples[name] = measured
    found = []  # the genes of every round's predicted front
    for r in range(config.search.rounds):
      predictor = search.fit_predictor(space.features(genes, input_size), measured[:, 0], config.predictor,
                                       config.seed)
      front = search.nsga2(space, lambda g: np.column_stack([predictor.predict(space.features(g, input_size)),
                                                             cost(space, g)]),
                           len(OBJECTIVES), pop_size=config.search.population,
                           generations=config.search.generations, seed=config.seed + r,
                           initial=search.best_measured(genes, measured, config.search.population))
      predicted = predictor.predict(space.features(front, input_size))
      front_measured = measure(space, front)
      genes, measured = np.concatenate([genes, front]), np.concatenate([measured, front_measured])
      found.append(front)
    result[f"{name}/predictor_error_mae"] = float(np.abs(predicted - front_measured[:, 0]).mean())
    found = np.unique(np.concatenate(found), axis=0)
    # The baseline's architectures, found in FP32, are then quantised to INT8 everywhere.
    fronts[name] = measure(space, found, 8 if name == "baseline" else None)
    result[f"{name}/front_size"] = float(len(found))
    result[f"{name}/best_error"] = float(fronts[name][:, 0].min())
    for k, objective in enumerate(OBJECTIVES[1:], 1):
      result[f"{name}/min_{objective}"] = float(fronts[name][:, k].min())

  # Both fronts in one normalised space (the union's range per objective) with one reference point.
  union = np.concatenate(list(fronts.values()))
  lo, hi = union.min(0), union.max(0)
  ref = np.full(len(OBJECTIVES), 1.1)
  for name, front in fronts.items():
    result[f"hv/{name}"] = search.hypervolume((front - lo) / np.where(hi > lo, hi - lo, 1.0), ref)
  result["hv/ratio"] = result["hv/joint"] / max(result["hv/baseline"], 1e-12)
  result.update(gains(fronts["joint"], fronts["baseline"]))
  result.update(check_latency(net, variables["params"], latency, config, x_cal))
  writer.write(config.total_steps, result)
  writer.close()
  plot(fronts, samples["joint"], os.path.join(workdir, "simq_nas_fronts.png"))
  return result


def gains(joint: np.ndarray, baseline: np.ndarray) -> Dict[str, float]:
  """The paper's measure: for each baseline point, the joint front's smallest size / latency at no higher
  error; the largest ratio over the baseline front ("up to"), and the ratio at its most accurate point."""
  out: Dict[str, float] = {}
  for k, objective in ((1, "latency"), (2, "size")):
    ratios = [p[k] / joint[joint[:, 0] <= p[0], k].min() if np.any(joint[:, 0] <= p[0]) else 0.0 for p in baseline]
    out[f"gain/{objective}_max"] = float(max(ratios))
    out[f"gain/{objective}_at_best_error"] = float(ratios[int(np.argmin(baseline[:, 0]))])
  return out


def check_latency(net, params, latency: search.LatencyModel, config, x) -> Dict[str, float]:
  """Whole deployed MLP subnets timed end to end against the summed per-layer model (smallest and largest
  subnet, all layers INT8; calibrated on `x`)."""
  out: Dict[str, float] = {}
  num_layers = len(net.layer_names())
  calibrate = jax.jit(lambda arch: supernet.calibrate(net, {"params": params}, arch, x)["ranges"])
  for name, largest in (("smallest", False), ("largest", True))[:config.latency.end_to_end]:
    arch = {k: np.asarray(v) for k, v in supernet.extreme_arch(net, largest).items()}
    ranges = calibrate(arch)
    bits = np.full((num_layers,), 8)
    measured = search.end_to_end_latency(net, params, arch, bits, ranges, batch=config.latency.batch,
                                         repeats=config.latency.repeats)
    fi, fo, on, _ = supernet.layer_shapes(net, arch, x.shape[1])
    out[f"latency/{name}_end_to_end_ms"] = measured * 1e3
    out[f"latency/{name}_model_ms"] = float(latency.latency(fi, fo, on, bits)) * 1e3
  return out


def plot(fronts, samples, path: str):
  """Error against latency and against size: every measured front point, and each front's 2-D
  non-dominated staircase in that projection."""
  plt = plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
  for ax, k, label in zip(axes, (1, 2), ("latency (ms, this CPU)", "size (KiB)")):
    ax.scatter(samples[:, k], samples[:, 0], s=5, c="lightgray", label="random joint candidates")
    for name, color in (("joint", "tab:blue"), ("baseline", "tab:orange")):
      points = fronts[name][np.argsort(fronts[name][:, k])]
      stairs = points[np.diff(np.minimum.accumulate(points[:, 0]), prepend=np.inf) < 0]
      ax.scatter(points[:, k], points[:, 0], s=8, color=color, alpha=0.35)
      ax.step(stairs[:, k], stairs[:, 0], where="post", color=color, marker="o", ms=3,
              label="joint arch + policy" if name == "joint" else "arch search, then all INT8")
    ax.set_xlabel(label)
    ax.set_xscale("log")
  axes[0].set_ylabel("held-out error")
  axes[0].legend(fontsize=7)
  plots.save(fig, path)
