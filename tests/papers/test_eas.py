"""Paper 11, EAS: Net2Wider / Net2Deeper leave the function unchanged (plain CNN and DenseNet, random
chains), parameter growth as computed, the search's envelope trains exactly the network inside it,
REINFORCE moves the controller toward rewarded actions, the search grows and trains DenseNets, and the
digits growth claim."""
import functools

import tensorflow_datasets as tfds
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import eas as eas_experiment
from inception_zoo.errors import UserError
from inception_zoo.projects.eas import eas, net2net, run as eas_driver

X = jax.random.uniform(jax.random.key(0), (6, 8, 8, 3))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _apply(arch, variables, train=False):
  if train:
    return net2net.Net(arch, 10).apply(variables, X, train=True, mutable=["batch_stats"])[0]
  return net2net.Net(arch, 10).apply(variables, X)


def _count(variables) -> int:
  return sum(a.size for a in jax.tree.leaves(variables["params"]))


def _random_variables(arch, key):
  """Initial variables with non-trivial BatchNorm (as after training), so copies and divisions matter."""
  v = jax.jit(net2net.Net(arch, 10).init)(key, X)
  k1, k2 = jax.random.split(key)
  noisy = lambda tree, k, lo: jax.tree.map(lambda a: a + jax.random.uniform(k, a.shape, minval=lo, maxval=1.0), tree)
  return {"params": noisy(v["params"], k1, -1.0), "batch_stats": noisy(v["batch_stats"], k2, 0.1)}


@pytest.mark.parametrize("kind", ["plain", "dense"])
def test_random_chains_of_transforms_preserve_the_function(kind):
  if kind == "plain":
    arch = net2net.Arch("plain", (((4, 3),), ((6, 1), (5, 3))))
  else:
    arch = net2net.Arch("dense", (((3, 3), (2, 1)), ((4, 3),)), stem=5, transitions=(6,))
  variables = _random_variables(arch, jax.random.key(1))
  reference = _apply(arch, variables)
  rng = np.random.default_rng(0)
  for step in range(3):  # deeper, wider, deeper: each transform applied to the other's output
    assert _count(variables) == net2net.num_params(arch, 3, 10)
    b = int(rng.integers(len(arch.blocks)))
    i = int(rng.integers(len(arch.blocks[b])))
    if step % 2 == 1:
      arch, variables = net2net.widen(arch, variables, b, i, arch.blocks[b][i][0] + int(rng.integers(1, 4)), rng)
    else:
      arch, variables = net2net.deepen(arch, variables, b, i, int(rng.choice([1, 3, 5])), rng)
    out = _apply(arch, variables)
    np.testing.assert_allclose(out, reference, atol=1e-5, err_msg=f"{kind} step {step}: {arch.describe()}")
  assert sum(len(block) for block in arch.blocks) == 5  # two layers were added


def test_parameter_growth_as_computed():
  # plain: widening conv0_0 (3x3, 3 inputs) from 4 to 7 adds 3 * (9 * 3 + 2) to it and 3 * 9 * 5 to
  # its consumer conv0_1 (3x3, 5 outputs); deepening after conv1_0 (8 channels, 5x5) adds 25 * 64 + 16.
  plain = net2net.Arch("plain", (((4, 3), (5, 3)), ((8, 3),)))
  v = jax.jit(net2net.Net(plain, 10).init)(jax.random.key(0), X)
  n0 = _count(v)
  assert n0 == (9 * 3 * 4 + 8) + (9 * 4 * 5 + 10) + (9 * 5 * 8 + 16) + 9 * 10
  plain2, v2 = net2net.widen(plain, v, 0, 0, 7, np.random.default_rng(1))
  assert _count(v2) - n0 == 3 * (9 * 3 + 2) + 3 * 9 * 5
  _, v3 = net2net.deepen(plain2, v2, 1, 0, 5, np.random.default_rng(2))
  assert _count(v3) - _count(v2) == 25 * 8 * 8 + 16
  # dense: growth 3 -> 5 of conv0_0 (3x3 on the 5-channel stem) adds 2 * 9 * 5 to it, and to each of
  # its consumers 2 input channels: conv0_1 (1x1, growth 2) 2 * (2 + 2), the transition (6 outputs)
  # 2 * (2 + 6). Inserting a 3x3 layer of growth 4 after conv0_0 (input 10 channels) adds
  # 2 * 10 + 9 * 10 * 4 for itself and 4 * (2 + 2) + 4 * (2 + 6) to the same consumers.
  dense = net2net.Arch("dense", (((3, 3), (2, 1)), ((4, 3),)), stem=5, transitions=(6,))
  v = jax.jit(net2net.Net(dense, 10).init)(jax.random.key(0), X)
  dense2, v2 = net2net.widen(dense, v, 0, 0, 5, np.random.default_rng(1))
  assert _count(v2) - _count(v) == 2 * 9 * 5 + 2 * (2 + 2) + 2 * (2 + 6)
  _, v3 = net2net.deepen(dense2, v2, 0, 0, 3, np.random.default_rng(2), width=4)
  assert _count(v3) - _count(v2) == 2 * 10 + 9 * 10 * 4 + 4 * (2 + 2) + 4 * (2 + 6)


def test_identity_layer_is_exact_in_training_mode_with_measured_statistics():
  arch = net2net.Arch("plain", (((4, 3), (5, 3)),))
  variables = _random_variables(arch, jax.random.key(3))
  _, stats = jax.jit(net2net.calibrate, static_argnums=(0, 3))(arch, variables, X, 10)
  deeper, v2 = net2net.deepen(arch, variables, 0, 0, 3, np.random.default_rng(4), stats=stats[(0, 0)])
  np.testing.assert_allclose(_apply(deeper, v2, True), _apply(arch, variables, True), atol=1e-5)
  np.testing.assert_allclose(_apply(deeper, v2), _apply(arch, variables), atol=1e-5)
  with pytest.raises(UserError, match="cannot shrink"):
    net2net.widen(arch, variables, 0, 0, 2, np.random.default_rng(0))
  with pytest.raises(UserError, match="odd"):
    net2net.Arch("plain", (((4, 2),),))
  with pytest.raises(UserError, match="no layer 3"):
    net2net.deepen(arch, variables, 0, 3, 3, np.random.default_rng(0))


def test_envelope_trains_the_network_inside_it():
  # One Adam step in the envelope is one Adam step of the network itself, and moves nothing else.
  space = eas.Space(widths=(4, 8, 12), kernels=(1, 3), max_layers=3, max_blocks=2, max_len=7)
  arch = net2net.Arch("plain", (((8, 3), (4, 1)), ((12, 3),)))
  variables = _random_variables(arch, jax.random.key(5))
  env = eas.Envelope(space, 2, 10)
  masks = env.masks(arch)
  y = jnp.arange(6) % 10
  tx = optax.adam(0.1)

  def adam_step(apply, variables):
    def loss(params):
      logits, _ = apply({"params": params, "batch_stats": variables["batch_stats"]}, X, train=True,
                        mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    value, grads = jax.value_and_grad(loss)(variables["params"])
    updates, _ = tx.update(grads, tx.init(variables["params"]), variables["params"])
    return value, {"params": optax.apply_updates(variables["params"], updates),
                   "batch_stats": variables["batch_stats"]}

  net = net2net.Net(arch, 10)
  real_loss, real = jax.jit(lambda v: adam_step(net.apply, v))(variables)
  embedded = env.embed(arch, variables)
  env_loss, stepped = jax.jit(lambda v: adam_step(lambda w, x, **kw: env.apply(w, x, *masks, **kw), v))(embedded)
  np.testing.assert_allclose(env_loss, real_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), env.extract(arch, stepped), real)
  # Everything outside the network (absent layers, channels and kernel taps) kept its embedded value.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               env.embed(arch, env.extract(arch, stepped))["params"], stepped["params"])
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), env.extract(arch, embedded), variables)


def test_reinforce_moves_the_policy_toward_rewarded_actions():
  space = eas.Space(widths=(4, 8, 12), kernels=(1, 3, 5), max_layers=4, max_blocks=2, max_len=9)
  controller = eas.Controller(space)
  arch = net2net.Arch("plain", (((4, 3), (8, 3)), ((4, 1),)))
  tokens, n, where, counts = space.encode(arch)
  mask = space.wider_mask(arch, where)
  assert mask.tolist() == [1, 1, 0, 1, 0, 0, 0, 0, 0]  # layers below the grid's top width
  rows = lambda v: jnp.asarray(np.stack([v, v]))
  # Two wider actions (widen everything: +1, nothing: -1) and two deeper ones (block 1, after layer 0,
  # kernel 5: +1; block 0, after layer 1, kernel 1: -1).
  batch = dict(tokens=rows(tokens), lengths=jnp.array([n, n]), counts=rows(counts), wider_mask=rows(mask))
  wider_batch = {**batch, "wider": jnp.asarray(np.stack([mask, 0 * mask]).astype(np.int32)),
                 "deeper": jnp.zeros((2, 3), jnp.int32), "is_wider": jnp.array([True, True])}
  deeper_batch = {**batch, "wider": jnp.zeros((2, space.max_len), jnp.int32),
                  "deeper": jnp.array([[1, 0, 2], [0, 1, 0]]), "is_wider": jnp.array([False, False])}
  advantages = jnp.array([1.0, -1.0])
  params = jax.jit(controller.init)(jax.random.key(0), batch["tokens"], batch["lengths"], batch["counts"],
                                    key=jax.random.key(1))["params"]
  log_prob = jax.jit(lambda p, b: eas.log_prob_and_entropy(controller, p, b)[0])
  # The log-probabilities against their definition on the actor outputs.
  wider, logits, _ = jax.jit(controller.apply)({"params": params}, batch["tokens"], batch["lengths"],
                                               batch["counts"], deeper=deeper_batch["deeper"])
  p = jax.nn.sigmoid(wider[0])
  logp = log_prob(params, wider_batch)
  np.testing.assert_allclose(logp[0], jnp.sum(mask * jnp.log(p)), rtol=1e-5)
  logp = log_prob(params, deeper_batch)
  expected = sum(jax.nn.log_softmax(z[0])[d] for z, d in zip(logits, (1, 0, 2)))
  np.testing.assert_allclose(logp[0], expected, rtol=1e-5)
  assert float(jax.nn.softmax(logits[1][0])[1]) == 0.0  # block 1 has one layer: "after layer 1" is masked

  tx = optax.adam(0.05)

  @jax.jit
  def update(params, opt_state, batch):
    grads = jax.grad(lambda q: eas.reinforce_loss(controller, q, batch, advantages, 2, 1e-5))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  before = [log_prob(params, b) for b in (wider_batch, deeper_batch)]
  opt_state = tx.init(params)
  for _ in range(5):
    for b in (wider_batch, deeper_batch):
      params, opt_state = update(params, opt_state, b)
  after = [log_prob(params, b) for b in (wider_batch, deeper_batch)]
  for old, new in zip(before, after):
    assert new[0] > old[0] + 0.5 and new[1] < old[1] - 0.5, (old, new)  # rewarded up, punished down


def test_reward_and_moving_average_baseline():
  np.testing.assert_allclose(eas.reward([0.5, 0.9]), [1.0, np.tan(0.45 * np.pi)])
  assert np.isfinite(eas.reward(1.0))
  baseline = eas.MovingBaseline(0.95)
  np.testing.assert_allclose(baseline.advantages(np.array([2.0, 4.0])), [2 - 2.85, 4 - 2.85])
  np.testing.assert_allclose(baseline.advantages(np.array([1.0])), [1 - (2.85 + 0.95 * (1 - 2.85))])


def test_config_and_the_tfds_loader():
  with pytest.raises(UserError, match="unknown setting 'x'"):
    eas_experiment.get_config("x")
  assert eas_experiment.get_config().data == "tfds:cifar10"
  assert eas_experiment.get_config("densenet").kind == "dense"
  config = eas_experiment.get_config()
  config.val_size = 4
  with tfds.testing.mock_data(num_examples=12):
    x_train, y_train, x_val, y_val, x_test, y_test = eas_driver.load_arrays(config)
  assert x_train.shape == (8, 32, 32, 3) and x_val.shape == (4, 32, 32, 3) and x_test.shape[1:] == (32, 32, 3)
  assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and y_train.dtype == np.int32


def test_densenet_search_grows_function_preserving_networks_that_train():
  # Goal of the DenseNet space (Sec. 4.2): the search's own sampler grows a DenseNet (a new dense layer
  # and a wider growth rate) that computes its parent's function at inheritance, and the search trains it.
  x_train, y_train, x_val, y_val, _, _ = eas_driver.load_arrays(eas_experiment.get_config("runlocal"))
  space = eas.Space(widths=(2, 4, 6), kernels=(1, 3), max_layers=2, max_blocks=2, max_len=5)
  trainer = eas.Trainer(space, 2, (x_train, y_train, x_val, y_val), 10, steps=8, batch_size=32, learning_rate=0.02)
  arch = net2net.Arch("dense", (((2, 3),), ((2, 3),)), stem=4, transitions=(4,))
  start = trainer(arch, jax.jit(net2net.Net(arch, 10).init)(jax.random.key(0), x_train[:1]), 0)
  assert start.accuracy > 0.2, start.accuracy  # 8 steps from scratch: well above chance (0.1)
  search = eas.Search(space, trainer, start, policy="random", num_samples=1, wider_actions=1, deeper_actions=1,
                      learning_rate=0.05, wider_noise=0.0, seed=0)
  grown, variables, actions = search.sample()
  assert sum(map(len, grown.blocks)) == 3 and len(actions) == 2, grown
  np.testing.assert_allclose(trainer.logits(grown, variables, x_val), trainer.logits(arch, start.variables, x_val),
                             atol=1e-5)
  child = trainer(grown, variables, 1)
  moved = jax.tree.map(lambda a, b: a.shape == b.shape and not np.allclose(a, b), child.variables["params"],
                       variables["params"])
  assert all(jax.tree.leaves(moved)), moved  # every parameter trained, the inherited ones included
  assert child.accuracy == pytest.approx(trainer.score(child, x_val, y_val)) and child.accuracy > 0.2


@pytest.mark.slow
def test_search_by_transformation_grows_better_networks(tmp_path):
  # Cai et al. 2018, Sec. 4, the runlocal setting (3 seeds, 48 networks per search), claim (1): growing
  # a network by function-preserving transformations, every sample inheriting its parent's weights,
  # reaches far better networks than the start net, for the controller and for random transformations.
  # Measured: start net 0.686 val / 0.686 test (246 parameters); best validation 0.75-0.81. Claim (2),
  # the controller's selected network better than random search's, is not asserted: it held in 8 of 9
  # seeds on one machine and 3 of 9 on another (projects/eas/README.md), i.e. it is within the noise.
  r = eas_experiment.main(["--config=runlocal", f"--workdir={tmp_path}"])
  assert r["start/val_accuracy"] < 0.72
  for policy in ("controller", "random"):
    assert r[f"{policy}/best_val_accuracy"] > r["start/val_accuracy"] + 0.04, r
    assert r[f"{policy}/best_test_accuracy"] > r["start/test_accuracy"] + 0.03, r
    assert all(r[f"{policy}/seed{s}/best_params"] > 2 * r["start/params"] for s in range(3)), r
  assert (tmp_path / "eas_search.png").exists()
