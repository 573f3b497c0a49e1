"""Optimizer and schedule construction: the paper's numbers, masks, clipping."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments.common_inception import inception_config
from inception_zoo import UserError
from inception_zoo.train import optim


def test_paper_schedule_decays_by_094_every_two_epochs():
  config = inception_config("inception_v4", None)
  schedule = optim.make_schedule(config, steps_per_epoch=100, total_steps=10_000)
  assert schedule(0) == pytest.approx(0.045)
  assert schedule(199) == pytest.approx(0.045)
  assert schedule(200) == pytest.approx(0.045 * 0.94)
  assert schedule(1000) == pytest.approx(0.045 * 0.94 ** 5)


def test_warmup_then_cosine():
  config = ml_collections.ConfigDict(dict(schedule=dict(
      name="cosine", base_lr=1.0, warmup_epochs=1.0, end_lr_fraction=0.0)))
  schedule = optim.make_schedule(config, steps_per_epoch=10, total_steps=110)
  assert schedule(5) == pytest.approx(0.5)
  assert schedule(10) == pytest.approx(1.0)
  assert schedule(60) == pytest.approx(0.5, abs=1e-6)
  assert schedule(110) == pytest.approx(0.0, abs=1e-6)


def test_rmsprop_is_tensorflows():
  """One step equals TF's RMSProp: ms = 0.9 * 1 + 0.1 g^2, mom = lr g / sqrt(ms + eps)."""
  config = inception_config("inception_v4", None)
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip = 0.0
  params = {"w": jnp.array([1.0, -2.0])}
  tx = optim.make_optimizer(config, optax.constant_schedule(0.045))
  g = {"w": jnp.array([0.5, 3.0])}
  updates, _ = tx.update(g, tx.init(params), params)
  ms = 0.9 * 1.0 + 0.1 * g["w"] ** 2
  np.testing.assert_allclose(updates["w"], -0.045 * g["w"] / np.sqrt(ms + 1.0), rtol=1e-6)


def test_weight_decay_mask_and_clipping():
  config = inception_config("inception_v4", None)
  params = {"conv": {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))}, "bn": {"scale": jnp.ones((2,))}}
  mask = optim.decay_mask(config.optimizer.wd_mask)(params)
  assert mask == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False}}
  config.optimizer.update(name="sgd", momentum=0.0, weight_decay=0.0, grad_clip=2.0)
  tx = optim.make_optimizer(config, optax.constant_schedule(1.0))
  big = jax.tree.map(lambda p: 100.0 * p, params)
  updates, _ = tx.update(big, tx.init(params), params)
  assert optax.tree.norm(updates) == pytest.approx(2.0)


def test_unknown_optimizer_is_an_error():
  config = inception_config("inception_v4", None)
  config.optimizer.name = "lamb"
  with pytest.raises(UserError, match="unknown optimizer 'lamb'"):
    optim.make_optimizer(config, optax.constant_schedule(1.0))
