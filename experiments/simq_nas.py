"""SimQ-NAS (Sridhar, Szankin, Chen, Sundaresan, Sarah, "SimQ-NAS: Simultaneous Quantization Policy and
Neural Architecture Search", arXiv:2312.13301, 2023), paper 31 of the zoo.

The claim: searching the subnet architecture and its per-layer quantisation policy together (NSGA-II over
lightly trained predictors) beats searching the architecture, then quantising the whole network to INT8,
in accuracy, model size and latency at once (up to 4.80x latency and 3.44x size at equal accuracy).

CPU, embedded digits (about 32 s of CPU on 2 cores, 2 minutes wall under load): an elastic residual-MLP
supernet (2 stages, depth 1-2 blocks per stage, widths 32/48/64, expansion 1/2/3 per block; `nas.supernet`)
trained with the sandwich rule for 400 steps on scikit-learn's 8x8 digits (1,437 train images); subnets
are masks of one compiled network. Two searches with the same budget, each: measure 200 random candidates
(top-1 on the 360 held-out images of the post-training-quantised masked supernet, calibrated on 256
training images), fit a gradient-boosting predictor of the error, run pymoo's NSGA-II (population 100,
30 generations) on (predicted error, latency, size), measure the predicted front, refit and search again
from the best measured candidates (3 rounds):
- joint: architecture genes + one bit-width in {4, 8, 32} per layer;
- baseline: architecture genes at FP32, then every layer of the found fronts quantised to INT8.
Latency is measured on this CPU (per-layer timings of the deployed FP32 and int8 x int8 -> int32 kernels
at batch 1024, a fitted cost model summed over the layers, checked against whole subnets); size = sum of
bits x weights + 32-bit biases. Returns both fronts' hypervolume in the same normalised (error, latency,
size) space with the same reference point, the joint front's size and latency gains at no higher error,
and plots both fronts to WORKDIR/simq_nas_fronts.png:
  python -m experiments.simq_nas --config=runlocal --workdir=workdirs/simq_nas
Measured here: hypervolume 1.205 (joint) against 1.064 (search, then INT8), ratio 1.13 (1.12-1.22 over
four runs: the timings, taken on a shared CPU, steer the search); best held-out error 0.036 against 0.039;
at no higher error than a baseline point the joint front is up to 8.4x smaller and 3.9x faster (1.6x and
1.4x at the baseline's most accurate point); smallest front model 4.4 KiB (INT4 layers) against 8.1 KiB.
The error predictor is off by 0.003 on the last front; the latency model gives 0.38 / 2.48 ms for the
smallest / largest INT8 subnet, timed whole at 0.35 / 1.98 ms. On XLA's CPU backend the INT8 layer
(quantise, int8 product, dequantise) is slower than FP32 for the smallest layers (64x64 at batch 1024:
0.16 against 0.11 ms) and faster for the largest (192x64: 0.29 against 0.39 ms), so the joint fronts mix
FP32, INT8 and INT4 layers; INT4 saves size only (it runs the INT8 kernel: no 4-bit CPU kernel).

Full setting (no --config; for a GPU): the elastic ResNet-50 supernet of `nas.supernet.ElasticResNet`
(largest subnet = torchvision's ResNet-50, 25,557,032 parameters; a stage runs base 1/2/4/1 + 0/1/2
blocks, stem and stage widths x0.65/0.8/1.0, bottleneck inner width 0.15/0.2/0.25 x its output: OFA's
choice lists anchored at ResNet-50, as BootstrapNAS builds its supernet) on ImageNet-1k (tfds
`imagenet2012`, 224 px, inception crops + flips, ImageNet mean/std), with per-layer INT8 / FP32
policies. Three stages in one run:
1. joint training (`train.supernet`, the classification trainer's loop: resume, checkpoints, metrics,
   sharding) with the sandwich rule, SGD 0.9, lr 0.02 cosine, wd 3e-5, batch 256, 25 epochs (our choice,
   OFA-like; the paper starts from a trained supernet). Start it from ResNet-50's weights as BootstrapNAS
   does: `python -m inception_zoo.convert --timm resnet50 --checkpoint R50.safetensors --out weights/r50`
   and `--config.init_from=weights/r50` (the parameter names are the zoo ResNet's);
2. per candidate: BN statistics and PTQ input ranges calibrated on 512 training images (center crops),
   top-1 on the first 10,000 validation images (`search.eval_images`);
3. the same two searches as the CPU setting (200 samples, 5 rounds of pymoo NSGA-II, population 50,
   50 generations), latency from per-layer timings on the run's accelerator of the layers' im2col
   products at batch 8 (`search.LatencyModel`; no end-to-end check: the int8 deployed form is written for
   the MLP only), size from the bits.
  python -m experiments.simq_nas --config.init_from=weights/r50 --config.input.data_dir=DIR --workdir=W
The paper's INT8 latencies come from Intel Neural Compressor on a Xeon; its ViT / BERT / BEiT-3
supernets are the same search with heads / hidden size / layers as genes (not built here).
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
from inception_zoo.nas import search, supernet
from inception_zoo.quant import policy
from inception_zoo.train import classification
from inception_zoo.train import supernet as supernet_training
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots

OBJECTIVES = ("error", "latency_ms", "size_kib")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.predictor = "gbm"
  # eval_batch 0: the 360 held-out images at once
  c.search = ml_collections.ConfigDict(dict(samples=200, rounds=3, population=100, generations=30, chunk=16,
                                            eval_batch=0))
  if arg == "runlocal":
    c.name = "simq_nas_digits"
    c.supernet = ml_collections.ConfigDict(dict(kind="elastic_mlp", widths=(32, 48, 64), expansions=(1, 2, 3),
                                                stages=2, max_depth=2))
    c.bits = (4, 8, 32)
    c.total_steps = 400
    c.batch_size = 64
    c.learning_rate = 3e-3
    c.num_random = 2  # sandwich rule: largest + smallest + 2 random subnets per step
    c.log_every = 100
    c.calibration = 256  # training images that calibrate the activation ranges
    c.latency = ml_collections.ConfigDict(dict(batch=1024, samples=6, repeats=15, end_to_end=2))
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none for the elastic ResNet-50 ImageNet search)")
  c = supernet_training.base_config()
  c.update(name="simq_nas_resnet50_i1k", seed=0, predictor="gbm")
  c.supernet = ml_collections.ConfigDict(dict(kind="elastic_resnet", stem_width=64,
                                              stage_widths=(256, 512, 1024, 2048), base_depths=(1, 2, 4, 1),
                                              depth_list=(0, 1, 2), expand_ratio_list=(0.15, 0.2, 0.25),
                                              width_mult_list=(0.65, 0.8, 1.0)))
  common.imagenet(c, size=224, eval_resize=256, batch_size=256, num_epochs=25, norm="normalize")
  for split in ("pp_train", "pp_eval"):  # tfds ImageNet examples also carry their file name (a string)
    c.input[split] += "|keep('image', 'label')"
  c.optimizer.update(name="sgd", momentum=0.9, weight_decay=3e-5)
  c.schedule.update(name="cosine", base_lr=0.02)
  c.bits = (8, 32)  # the paper's per-layer INT8 / full-precision choice
  c.calibration = 512  # training images per subnet: BN statistics and activation ranges
  c.search = ml_collections.ConfigDict(dict(samples=200, rounds=5, population=50, generations=50,
                                            eval_images=10_000, chunk=1, eval_batch=250))
  c.latency = ml_collections.ConfigDict(dict(batch=8, samples=6, repeats=10, end_to_end=0))
  return c


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
