"""The full-batch loop of the theory, graph and prototype papers."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inception_zoo.metrics import MetricWriter, NonFiniteLoss, read_metrics
from inception_zoo.train.fullbatch import fit


def test_fit_solves_least_squares_and_logs(tmp_path):
  x = jax.random.normal(jax.random.key(0), (64, 3))
  w_true = jnp.array([1.0, -2.0, 0.5])
  y = x @ w_true
  loss = lambda w, key: (jnp.mean((x @ w - y) ** 2), {"norm": jnp.linalg.norm(w)})
  writer = MetricWriter(str(tmp_path), tensorboard=False)
  w, losses = fit(loss, jnp.zeros(3), optax.sgd(0.1), 250, has_aux=True, log_every=100, writer=writer)
  np.testing.assert_allclose(w, w_true, atol=1e-4)
  assert losses.shape == (250,) and losses[-1] < 1e-8 < losses[0]
  rows = read_metrics(str(tmp_path))
  assert [r["step"] for r in rows] == [100, 200, 250] and "train/norm" in rows[0]


def test_fit_names_the_first_non_finite_step():
  loss = lambda w, key: jnp.where(w > 3.5, jnp.nan, (w - 10.0) ** 2)  # NaN once w passes 3.5
  with pytest.raises(NonFiniteLoss, match="loss became nan at step 3;"):
    fit(loss, jnp.array(0.0), optax.sgd(0.1), 10, log_every=4)


def test_fit_passes_the_step_index_across_chunks():
  # Each step's loss is its own index: the losses come back as 0, 1, ..., across chunk boundaries.
  loss = lambda w, key, step: step.astype(jnp.float32) + 0.0 * w
  _, losses = fit(loss, jnp.array(0.0), optax.sgd(0.1), 7, log_every=3, pass_step=True)
  np.testing.assert_array_equal(losses, np.arange(7))
