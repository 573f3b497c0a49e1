"""Paper 31, SimQ-NAS: subnets of the masked supernet against dense sliced networks and a numpy oracle, the
size formula by hand, post-training quantisation, pymoo's NSGA-II on ZDT1, and the digits claim."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from pymoo.problems import get_problem

from experiments import simq_nas
from inception_zoo import create_model
from inception_zoo.errors import UserError
from inception_zoo.projects.simq_nas import search, supernet
from inception_zoo.quant import policy

NET = supernet.ElasticMLP(widths=(4, 6, 8), expansions=(1, 2), stages=2, max_depth=2, num_classes=3)


def _params(net, in_features, seed=0):
  """Random weights and biases (nonzero biases show a wrong bias mask), without compiling an init."""
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, in_features)),
                          supernet.extreme_arch(net, True))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.5, jnp.float32), shapes)


def _numpy_subnet(params, arch, x):
  """The subnet written out by hand: first-k slices of every kernel, blocks past the depth left out."""
  def dense(name, x, i, o):
    return x @ np.asarray(params[name]["kernel"])[:i, :o] + np.asarray(params[name]["bias"])[:o]
  relu = lambda a: np.maximum(a, 0)
  fan_in = x.shape[1]
  for s in range(2):
    w = int(arch["width"][s])
    x = relu(dense(f"stage{s}_proj", x, fan_in, w))
    for b in range(int(arch["depth"][s])):
      h = w * int(arch["expand"][s][b])
      x = x + dense(f"stage{s}_block{b}_fc2", relu(dense(f"stage{s}_block{b}_fc1", x, w, h)), h, w)
    fan_in = w
  return dense("head", x, fan_in, 3)


def test_subnets_of_the_masked_supernet_are_the_sliced_networks():
  params = _params(NET, 5)
  x = np.asarray(np.random.default_rng(2).uniform(size=(7, 5)), np.float32)
  space = search.SearchSpace(NET, (4, 8, 32))
  archs, bits = space.decode(space.sample(np.random.default_rng(0), 4))
  apply = jax.jit(lambda a, b, r: NET.apply({"params": params}, x, a, b, r))
  calibrate = jax.jit(lambda a: supernet.calibrate(NET, {"params": params}, a, x)["ranges"])
  for i in range(4):
    arch = {k: v[i] for k, v in archs.items()}
    layers = supernet.subnet_layers(NET, params, arch)
    masked = np.asarray(apply(arch, jnp.full((13,), policy.FULL), jnp.zeros((13, 2))))
    np.testing.assert_allclose(masked, _numpy_subnet(params, arch, x), rtol=1e-5, atol=1e-5)
    # The same policy and calibration on the masked and the sliced network: the same quantised outputs;
    # deployed with int8 x int8 -> int32 products, the same up to float rounding.
    ranges = calibrate(arch)
    named_bits = dict(zip(NET.layer_names(), bits[i].tolist()))
    named_ranges = dict(zip(NET.layer_names(), ranges))
    packed = {n: (policy.pack_weight(k, named_bits[n]) if named_bits[n] < policy.FULL else k, b)
              for n, (k, b) in layers.items()}
    sliced = jax.jit(lambda layers, packed: (
        supernet.dense_forward(NET, layers, arch, x),
        supernet.dense_forward(NET, layers, arch, x, named_bits, named_ranges),
        supernet.dense_forward(NET, packed, arch, x, named_bits, named_ranges, integer=True)))
    dense, fake, deployed = map(np.asarray, sliced(layers, packed))
    quantised = np.asarray(apply(arch, bits[i], ranges))
    np.testing.assert_allclose(masked, dense, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(quantised, fake, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(deployed, quantised, rtol=1e-4, atol=1e-4)
    assert np.abs(quantised - masked).max() > 1e-3  # the policy did quantise


def test_size_is_bits_times_weights_plus_32_bit_biases_by_hand():
  net = supernet.ElasticMLP(widths=(4,), expansions=(1, 2), stages=1, max_depth=2, num_classes=2)
  arch = {"depth": np.array([1]), "width": np.array([4]), "expand": np.array([[2, 1]])}
  fan_in, fan_out, active, positions = supernet.layer_shapes(net, arch, 3)
  assert positions.tolist() == [1] * 6
  # proj 3->4 at 8 bits, block0 fc1 4->8 at 4 bits, fc2 8->4 at 32 bits, block1 (skipped), head 4->2 at 8.
  assert fan_in.tolist() == [3, 4, 8, 4, 4, 4] and fan_out.tolist() == [4, 8, 4, 4, 4, 2]
  assert active.tolist() == [True, True, True, False, False, True]
  bits = np.array([8, 4, 32, 8, 8, 8])
  by_hand = (8 * 12 + 32 * 4) + (4 * 32 + 32 * 8) + (32 * 32 + 32 * 4) + (8 * 8 + 32 * 2)  # = 1,888
  assert policy.size_bits(fan_in, fan_out, bits, active) == by_hand == 1888
  layers = supernet.subnet_layers(net, _params(net, 3), arch)
  named = dict(zip(net.layer_names(), bits))
  assert sum(named[n] * k.size + 32 * b.size for n, (k, b) in layers.items()) == by_hand
  with pytest.raises(UserError, match="bit-width 16"):
    search.SearchSpace(net, (4, 16))
  with pytest.raises(UserError, match="width 5 is not in the search space"):
    supernet.subnet_layers(net, _params(net, 3), {**arch, "width": np.array([5])})


def test_post_training_quantisation_error_falls_with_bits():
  params = _params(NET, 5, seed=3)
  arch = {k: np.asarray(v) for k, v in supernet.extreme_arch(NET, True).items()}
  x = np.asarray(np.random.default_rng(4).uniform(size=(64, 5)), np.float32)
  ranges = jax.jit(lambda a: supernet.calibrate(NET, {"params": params}, a, x)["ranges"])(arch)
  apply = jax.jit(lambda b: NET.apply({"params": params}, x, arch, jnp.full((13,), b), ranges))
  exact = apply(policy.FULL)
  errors = [float(jnp.abs(apply(b) - exact).mean()) for b in (2, 4, 8, 32)]
  assert errors[0] > errors[1] > errors[2] > errors[3] == 0.0, errors
  assert errors[2] < 0.03 * float(jnp.abs(exact).mean())  # INT8: 0.25 of a mean logit size 11.8 (2.2%)
  # Outside the calibrated range activations clip; inside, the grid step is range / (2^b - 1).
  q = policy.quantize_calibrated(jnp.array([-1.0, 0.0, 0.26, 3.0]), 2, 0.0, 1.5)
  np.testing.assert_allclose(q, [0.0, 0.0, 0.5, 1.5])


def test_pymoo_nsga2_reaches_the_zdt1_front():
  # The search's NSGA-II (integer genes, SBX + polynomial mutation with rounding) on ZDT1 over a 0.01
  # grid, which contains the true front (x2..xn = 0). Measured: 0.8685 of 0.8701 (99.8%).
  problem = get_problem("zdt1", n_var=6)

  class Grid:
    upper = np.full(6, 100)

  front = search.nsga2(Grid(), lambda g: problem.evaluate(g / 100.0), 2, pop_size=60, generations=120, seed=1)
  ref = np.array([1.1, 1.1])
  optimum = search.hypervolume(problem.pareto_front(), ref)
  assert optimum == pytest.approx(1.21 - 1 / 3, abs=0.01)  # the area above 1 - sqrt(f1) in the box
  assert search.hypervolume(problem.evaluate(front / 100.0), ref) > 0.98 * optimum


def test_elastic_resnet50_is_resnet50_and_its_subnets_are_their_own_networks():
  # The full setting's supernet: its largest subnet is torchvision's / timm's ResNet-50, tensor for tensor.
  full = supernet.ElasticResNet()
  x = jnp.zeros((1, 32, 32, 3))
  shapes = jax.eval_shape(full.init, jax.random.key(0), x)
  reference = jax.eval_shape(create_model("resnet50", num_classes=1000).init, jax.random.key(0), x)
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"])) == 25_557_032
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, reference)
  largest = {k: np.asarray(v) for k, v in supernet.extreme_arch(full, True).items()}
  fan_in, fan_out, active, positions = supernet.layer_shapes(full, largest, 224)
  assert len(fan_in) == 54 and active.all() and positions[0] == 112 * 112 and positions[-1] == 1
  assert int((fan_in * fan_out * positions).sum()) == 4_089_184_256  # ResNet-50's 4.09 GMACs at 224 px
  # A width-reduced supernet with random weights and BN statistics: the largest subnet is the zoo ResNet
  # (timm-checked) with the same weights; the smallest, sliced, is its own network of the zoo's blocks.
  net = supernet.ElasticResNet(num_classes=5, stem_width=16, stage_widths=(32, 32, 64, 64), depth_list=(0, 1),
                               base_depths=(1, 1, 1, 1))
  images = jnp.asarray(np.random.default_rng(0).normal(size=(3, 32, 32, 3)), jnp.float32)
  rng = np.random.default_rng(1)
  variables = jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape) if s.ndim == 1 else
                                                 rng.normal(size=s.shape) * 0.3, jnp.float32),
                           jax.eval_shape(net.init, jax.random.key(0), images))
  smallest = {k: np.asarray(v) for k, v in supernet.extreme_arch(net, False).items()}
  small, sliced = supernet.subnet_variables(net, variables, smallest)
  assert (small.stem, small.widths, small.inner) == (16, (24, 24, 40, 40), ((8,), (8,), (8,), (8,)))
  resnet = create_model("resnet50", num_classes=5, stem_width=16, channels=(8, 8, 16, 16), layers=(2, 2, 2, 2))
  masked_small, masked_large, own_small, own_large = jax.jit(lambda v, s: (
      net.apply(v, images, smallest), net.apply(v, images), small.apply(s, images),
      resnet.apply(v, images)[0]))(variables, sliced)
  np.testing.assert_allclose(masked_small, own_small, rtol=1e-5, atol=1e-5 * np.abs(own_small).max())
  np.testing.assert_allclose(masked_large, own_large, rtol=1e-5, atol=1e-5 * np.abs(own_large).max())
  assert np.abs(masked_small - masked_large).max() > 0.1  # the subnets differ


def test_full_setting_runs_end_to_end_on_mocked_imagenet(tmp_path):
  # Joint supernet training (2 steps), per-subnet BN + PTQ calibration, both searches, on mocked ImageNet
  # at 32 px with a 2-stage, width-reduced space: the pipeline of the full setting, not its numbers.
  with pytest.raises(UserError, match="unknown setting 'tiny' \\(runlocal"):
    simq_nas.get_config("tiny")
  pp = "|normalize|keep('image', 'label')"
  with tfds.testing.mock_data(num_examples=4):
    r = simq_nas.main([
        f"--workdir={tmp_path}", "--config.supernet.stem_width=16", "--config.supernet.stage_widths=(32, 64)",
        "--config.supernet.base_depths=(1, 1)", "--config.supernet.depth_list=(0, 1)", "--config.num_random=0",
        f"--config.input.pp_train=decode|inception_crop(32)|flip_lr{pp}",
        f"--config.input.pp_eval=decode|resize_small(36)|central_crop(32){pp}", "--config.input.batch_size=4",
        "--config.input.eval_batch_size=4", "--config.input.num_threads=1", "--config.total_steps=2",
        "--config.log_every=1", "--config.mesh.data=1", "--config.calibration=4", "--config.search.samples=3",
        "--config.search.rounds=1", "--config.search.population=4", "--config.search.generations=2",
        "--config.search.eval_images=4", "--config.search.eval_batch=2", "--config.latency.batch=1",
        "--config.latency.samples=2", "--config.latency.repeats=1"])
  assert (tmp_path / "simq_nas_fronts.png").exists() and any(tmp_path.glob("**/_CHECKPOINT_METADATA"))
  for name in ("joint", "baseline"):
    assert 0.0 <= r[f"{name}/best_error"] <= 1.0 and r[f"{name}/min_latency_ms"] > 0, r
  assert r["joint/min_size_kib"] < r["baseline/min_size_kib"] * 4.01, r  # FP32 layers at most 4x INT8


@pytest.mark.slow
def test_joint_search_front_beats_search_then_int8(tmp_path):
  # SimQ-NAS's claim: the joint architecture + per-layer policy search dominates "search the architecture,
  # then quantise everything to INT8" in (error, latency, size). Measured: hypervolume 1.248 against 1.024
  # (1.12-1.22 over runs under load), best held-out error 0.039 on both fronts, at no higher error up to
  # 7.4x smaller and 4.3x faster (1.9x / 1.16x at the baseline's most accurate point), error predictor off
  # by 0.004 on the last front. Latency is timed on the shared CPU, so the search can vary between runs.
  r = simq_nas.main(["--config=runlocal", f"--workdir={tmp_path}"])
  assert r["hv/joint"] > 1.05 * r["hv/baseline"], r
  assert r["baseline/best_error"] < 0.06, r  # the supernet's subnets are accurate
  assert r["joint/best_error"] <= r["baseline/best_error"] + 0.006, r  # within 2 of 360 images
  assert r["joint/min_size_kib"] < 0.6 * r["baseline/min_size_kib"], r  # INT4 layers: 4.4 against 8.1 KiB
  assert r["gain/size_max"] > 2.0, r
  assert r["joint/predictor_error_mae"] < 0.02, r  # the predictor knows the measured error within 2 points
  # Only the order of the timings is asserted (model and whole subnets agreed within 1.6x here under load).
  assert r["latency/largest_end_to_end_ms"] > r["latency/smallest_end_to_end_ms"], r
  assert r["latency/largest_model_ms"] >= r["latency/smallest_model_ms"], r
  assert (tmp_path / "simq_nas_fronts.png").exists()
