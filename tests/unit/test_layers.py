"""Shared layers: stochastic depth (DropPath) and its per-block rates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_zoo.layers import DropPath, drop_path_rates


def test_drop_path_is_the_identity_in_evaluation():
  x = jax.random.normal(jax.random.key(0), (4, 3, 3, 2))
  out = DropPath(0.5, deterministic=True).apply({}, x)  # no 'dropout' RNG needed
  np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("shape", [(3, 3, 2), (5, 4)])  # NHWC maps and (batch, tokens, channels)
def test_drop_path_drops_whole_examples_and_rescales(shape):
  n, rate = 20_000, 0.3
  x = jnp.ones((n, *shape))
  out = np.asarray(jax.jit(lambda key: DropPath(rate, deterministic=False).apply(
      {}, x, rngs={"dropout": key}))(jax.random.key(0)))
  per_example = out.reshape(n, -1)
  # Each example is either dropped entirely or kept entirely, scaled by 1 / (1 - rate).
  assert np.all(per_example == per_example[:, :1])
  np.testing.assert_allclose(np.unique(per_example), [0.0, 1.0 / (1.0 - rate)], rtol=1e-6)
  dropped = np.mean(per_example[:, 0] == 0.0)
  # Binomial standard deviation sqrt(0.3 * 0.7 / 20000) = 0.0032: 5 sigma is 0.016.
  assert abs(dropped - rate) < 0.016, dropped
  assert abs(out.mean() - 1.0) < 0.025  # the expectation is preserved


def test_drop_path_rates_rise_linearly_over_all_blocks():
  rates = drop_path_rates(0.3, (1, 2, 1))
  assert [len(r) for r in rates] == [1, 2, 1]
  np.testing.assert_allclose(sum(rates, ()), [0.0, 0.1, 0.2, 0.3])
  assert drop_path_rates(0.0, (2,)) == ((0.0, 0.0),)
