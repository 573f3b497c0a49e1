"""Sparse training and inference (papers 16 and 17): layer-wise densities against hand computations,
exact mask counts, the cubic schedule, masks that stay zero through the real trainer and a resume,
and the sparse 1x1 path against the dense masked model."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments import random_pruning
from run_helpers import final_state
from inception_zoo import UserError, create_model
from inception_zoo.projects.random_pruning import run as pruning_run
from inception_zoo.pytree import path_str
from inception_zoo.sparsity import gradual, masks, spmm, training
from inception_zoo.train import classification, optim
from inception_zoo.train.state import make_init

# A stem conv, a big conv and a classifier: at 50% ERK both small layers pass density 1.
SHAPES = {"stem/kernel": (3, 3, 3, 8), "big/kernel": (3, 3, 64, 64), "fc/kernel": (64, 10)}
SIZES = {"stem/kernel": 216, "big/kernel": 36864, "fc/kernel": 640}
TOTAL = sum(SIZES.values())


def test_erk_caps_layers_at_density_one_and_redistributes():
  d = masks.layer_densities(SHAPES, 0.5, "erk")
  # raw ERK: stem 17/216, big 134/36864, fc 74/640; eps*raw > 1 for fc (the largest), then for stem;
  # big takes what is left of the budget.
  assert d["fc/kernel"] == d["stem/kernel"] == 1.0
  assert d["big/kernel"] == pytest.approx((0.5 * TOTAL - 640 - 216) / 36864, rel=1e-12)


def test_er_uses_channels_only():
  d = masks.layer_densities(SHAPES, 0.9, "er")
  # raw ER: stem (3+8)/24 > 1 after scaling -> dense; fc 74/640, big 128/4096 share the rest.
  eps = (0.1 * TOTAL - 216) / (128 / 4096 * 36864 + 74 / 640 * 640)
  assert d["stem/kernel"] == 1.0
  assert d["big/kernel"] == pytest.approx(eps * 128 / 4096, rel=1e-12)
  assert d["fc/kernel"] == pytest.approx(eps * 74 / 640, rel=1e-12)


@pytest.mark.parametrize("method", ["uniform", "er", "erk"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_masks_have_the_exact_per_layer_count(method, sparsity):
  params = {k.split("/")[0]: {"kernel": jnp.zeros(s), "bias": jnp.zeros(s[-1])} for k, s in SHAPES.items()}
  m = masks.random_masks(jax.random.key(0), params, sparsity, method)
  dens = masks.layer_densities(SHAPES, sparsity, method)
  kept = 0
  for name in SHAPES:
    layer = m[name.split("/")[0]]["kernel"]
    assert int(layer.sum()) == round(dens[name] * SIZES[name])  # exact zero count per layer
    kept += int(layer.sum())
    assert bool(m[name.split("/")[0]]["bias"].all())  # biases are never pruned
  assert abs(kept - (1 - sparsity) * TOTAL) <= len(SHAPES)  # one parameter per layer at most
  other = masks.random_masks(jax.random.key(1), params, sparsity, method)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(other))
                 if not a.all())


def test_cubic_schedule_hand_values():
  # Zhu & Gupta Eq. 1 with s_i 0, s_f 0.9, t_0 100, n dt 1000: s = 0.9 (1 - (1 - p)^3).
  for t, want in [(0, 0.0), (100, 0.0), (350, 0.9 * (1 - 0.75 ** 3)), (600, 0.9 - 0.1125),
                  (1100, 0.9), (5000, 0.9)]:
    assert float(gradual.cubic_sparsity(t, 0.0, 0.9, 100, 1100)) == pytest.approx(want, abs=1e-6)
  assert [t for t, _ in gradual.schedule_values(0.0, 0.9, 100, 1100, 300)] == [100, 400, 700, 1000, 1100]
  try:  # tensorflow-model-optimization's schedule, where installed (not a dependency)
    import tensorflow_model_optimization as tfmot
  except ImportError:
    return
  ref = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.9, 100, 1100, power=3, frequency=100)
  for t in range(100, 1101, 100):
    assert float(ref(t)[1]) == pytest.approx(float(gradual.cubic_sparsity(t, 0.0, 0.9, 100, 1100)), abs=1e-6)


def test_magnitude_mask_keeps_the_largest_exactly():
  w = jax.random.normal(jax.random.key(0), (1, 1, 40, 30))
  m = gradual.magnitude_mask(w, 0.85)
  assert int(m.sum()) == 1200 - round(0.85 * 1200)
  assert float(jnp.abs(w)[m].min()) >= float(jnp.abs(w)[~m].max())


def sparse_config(config, **sparsity):
  config.sparsity = ml_collections.ConfigDict(dict(include=r".*kernel", exclude="", **sparsity))
  return config


def test_dense_configs_are_unchanged_and_bad_methods_fail(digits_config):
  schedule = optim.make_schedule(digits_config, 10, 100)
  assert "sparsity" not in digits_config
  wrap = training.sparse_task(classification.CLASSIFICATION).wrap_optimizer
  assert not isinstance(wrap(optim.make_optimizer(digits_config, schedule), digits_config).init(
      {"w": jnp.ones(2)}), training.SparsityState)
  with pytest.raises(UserError, match="unknown sparsity method 'rigl'"):
    sparse_config(digits_config, method="rigl", sparsity=0.5)
    wrap(optim.make_optimizer(digits_config, schedule), digits_config)


def mlp_config(**sparsity):
  """The random-pruning experiment's digits MLP (width 16) through the real trainer, 6 steps."""
  config = random_pruning.get_config("runlocal")
  config.model.width = 16
  config.total_steps, config.checkpoint_every, config.keep_checkpoints, config.log_every = 6, 3, 3, 3
  return sparse_config(config, **sparsity)


def test_first_forward_pass_sees_the_masked_weights(tmp_path):
  config = mlp_config(method="erk", sparsity=0.9)
  s = classification.Setup(config, str(tmp_path), pruning_run.TASK)  # a sparse task: masked steps
  s.checkpoints.close()
  model, tx, schedule = s.model, s.tx, s.schedule
  state = jax.jit(make_init(model, tx, (8, 8, 1)))(jax.random.key(0))
  batch = {"image": jax.random.normal(jax.random.key(1), (8, 8, 8, 1)), "label": jnp.arange(8) % 10}
  plain = jax.jit(classification.make_train_step(model, tx, schedule, config))
  masked = jax.jit(s.task.make_train_step(model, tx, schedule, config))
  loss_masked = masked(state, batch)[1]["loss"]
  assert float(loss_masked) == float(plain(training.mask_state(state), batch)[1]["loss"])
  assert float(loss_masked) != float(plain(state, batch)[1]["loss"])


def saved_masks(workdir, step):
  state = final_state(workdir, step)
  return state, state["opt_state"]["masks"] if isinstance(state["opt_state"], dict) else state["opt_state"][1]


def test_masks_stay_zero_through_training_and_resume(tmp_path):
  config = mlp_config(method="erk", sparsity=0.8)
  classification.train_and_evaluate(config, str(tmp_path), pruning_run.TASK)  # checkpoints at 3, 6
  config.total_steps = 9
  classification.train_and_evaluate(config, str(tmp_path), pruning_run.TASK)  # resumes at 6
  first, m3 = saved_masks(str(tmp_path), 3)
  last, m9 = saved_masks(str(tmp_path), 9)
  counts = masks.kept_counts(masks.prunable_paths(first["params"]), 0.8, "erk")
  assert set(counts) == {"fc0/kernel", "fc1/kernel", "head/kernel"}
  flat3 = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(m3)[0]}
  for (path, w), (_, m), (_, e) in zip(jax.tree_util.tree_flatten_with_path(last["params"])[0],
                                       jax.tree_util.tree_flatten_with_path(m9)[0],
                                       jax.tree_util.tree_flatten_with_path(last["ema_params"])[0]):
    name = path_str(path)
    np.testing.assert_array_equal(m, flat3[name])  # fixed masks, restored with the optimizer state
    assert np.all(w[~m] == 0) and np.all(e[~m] == 0), name
    if name in counts:
      assert int(m.sum()) == counts[name], name
      assert np.count_nonzero(w) <= counts[name]


def test_gradual_pruning_reaches_the_final_sparsity_and_never_regrows():
  config = ml_collections.ConfigDict(dict(seed=0))
  sparse_config(config, method="magnitude", sparsity=0.75, initial_sparsity=0.0, begin_step=1, end_step=7,
                frequency=2)
  tx = training.from_config(optax.adam(0.05), config)
  params = {"conv": {"kernel": jax.random.normal(jax.random.key(0), (1, 1, 16, 12)), "bias": jnp.ones(12)}}
  state = tx.init(params)
  update = jax.jit(tx.update)
  history = []
  for t in range(10):
    grads = jax.tree.map(lambda x: jax.random.normal(jax.random.key(t), x.shape), params)
    u, state = update(grads, state, params)
    params = optax.apply_updates(params, u)
    m = np.asarray(state.masks["conv"]["kernel"])
    assert np.all(np.asarray(params["conv"]["kernel"])[~m] == 0)
    history.append(m)
  def expected_zeros(t):  # the last pruning step (1, 3, 5, 7) at or before update t sets the count
    last = max([p for p in (1, 3, 5, 7) if p <= t], default=None)
    return 0 if last is None else round(float(gradual.cubic_sparsity(last, 0.0, 0.75, 1, 7)) * 192)

  assert [int((~m).sum()) for m in history] == [expected_zeros(t) for t in range(10)]
  assert expected_zeros(9) == 144  # s_f = 0.75 of the 192 weights
  for before, after in zip(history, history[1:]):
    assert not np.any(after & ~before)  # pruned weights never come back
  assert bool(state.masks["conv"]["bias"].all())


@pytest.mark.parametrize("impl", spmm.IMPLEMENTATIONS)
def test_sparse_pointwise_path_equals_the_dense_masked_model(impl):
  model = create_model("mobilenetv1_100", num_classes=10, width=0.25, depth=0.34)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(1), x)
  m = masks.random_masks(jax.random.key(2), variables["params"], 0.8, "uniform", include=r".*conv_pw/kernel")
  variables = dict(variables, params=training.apply_masks(variables["params"], m))
  sparse = spmm.to_sparse(variables["params"], min_sparsity=0.5)
  assert len(sparse) >= 5
  dense, dense_feats = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  out, feats = jax.jit(lambda v, x: spmm.sparse_apply(model, v, x, sparse, impl))(variables, x)
  for name in dense_feats:  # every feature map and the logits, relative to their scale
    scale = float(jnp.max(jnp.abs(dense_feats[name])))
    np.testing.assert_allclose(feats[name], dense_feats[name], atol=1e-5 * scale, rtol=0)
  np.testing.assert_allclose(out, dense, atol=1e-5 * float(jnp.max(jnp.abs(dense))), rtol=0)
