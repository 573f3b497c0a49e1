"""Paper 13 (Nguyen, Akbarian & Ho, ICML 2024): the softmax Gaussian MoE's likelihood against an independent
numpy version, the Voronoi loss's invariances, and the rate claim from the experiment's CPU setting."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import temperature_moe
from inception_zoo.errors import UserError
from inception_zoo.projects.temperature_moe import gaussian_moe as gm


def _params(k=3, d=2, seed=0):
  r = np.random.default_rng(seed)
  p = {"beta1": r.normal(size=(k, d)), "beta0": r.normal(size=k), "tau": np.float32(0.7),
       "a": r.normal(size=(k, d)), "b": r.normal(size=k), "nu": r.uniform(0.1, 0.5, size=k)}
  p["beta1"][-1], p["beta0"][-1] = 0.0, 0.0
  return {name: jnp.asarray(v, jnp.float32) for name, v in p.items()}


def _numpy_log_likelihood(p, x, y, gate):
  """Independent float64 reference, expert by expert."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  logits, dens = [], []
  for i in range(p["b"].shape[0]):
    lin = x @ p["beta1"][i]
    logits.append((lin + p["beta0"][i]) / p["tau"] if gate == "temperature"
                  else np.tanh(lin) / p["tau"] + p["beta0"][i])
    mean = x @ p["a"][i] + p["b"][i]
    dens.append(np.exp(-(y - mean) ** 2 / (2 * p["nu"][i])) / np.sqrt(2 * np.pi * p["nu"][i]))
  g = np.exp(np.stack(logits, 1))
  return np.log(np.sum(g / g.sum(1, keepdims=True) * np.stack(dens, 1), axis=1))


@pytest.mark.parametrize("gate", gm.GATES)
def test_log_likelihood_matches_numpy_and_samples_are_likely(gate):
  p = _params()
  x, y = gm.sample(jax.random.key(0), p, 4000, gate)
  np.testing.assert_allclose(gm.log_likelihood(p, x, y, gate), _numpy_log_likelihood(p, x, y, gate),
                             rtol=1e-4, atol=1e-4)
  # The sampler draws from this density: the true parameters beat perturbed ones on its samples.
  worse = dict(p, a=p["a"] + 0.3)
  assert float(gm.log_likelihood(p, x, y, gate).mean()) > float(gm.log_likelihood(worse, x, y, gate).mean())
  with pytest.raises(UserError):
    gm.log_likelihood(p, x, y, "topk")


@pytest.mark.parametrize("gate", gm.GATES)
def test_voronoi_loss_zero_at_truth_and_invariant_to_permuting_experts(gate):
  true = _params(k=2, seed=1)
  assert float(gm.voronoi_loss(true, true, gate)) == pytest.approx(0.0, abs=1e-6)
  fitted = {k: (v[jnp.array([0, 0, 1])] if v.ndim else v) for k, v in true.items()}  # over-specified
  fitted = jax.tree.map(lambda v: v + 0.05, fitted)
  base = float(gm.voronoi_loss(fitted, true, gate))
  assert base > 0
  perm = jnp.array([2, 0, 1])
  permuted = {k: (v[perm] if v.ndim else v) for k, v in fitted.items()}
  assert float(gm.voronoi_loss(permuted, true, gate)) == pytest.approx(base, rel=1e-6)
  # By hand: expert 0 split into two halves of its weight, both shifted by delta in beta1, a, b, nu; the
  # cell of 2 pays |d beta1|^4 + |d b|^4 + |d a|^2 + |d nu|^2 (rbar(2) = 4) weighted by w0 / 2 each.
  delta = 0.05
  split = {k: (v[jnp.array([0, 0, 1])] if v.ndim else v) for k, v in true.items()}
  half = jnp.log(2.0) * (true["tau"] if gate == "temperature" else 1.0)
  split["beta0"] = split["beta0"].at[:2].add(-half)
  for name in ("beta1", "a", "b", "nu"):
    split[name] = split[name].at[:2].add(delta)
  w0 = float(gm.mixing_weights(true, gate)[0])
  expected = w0 * ((delta * np.sqrt(2)) ** 4 + delta ** 4 + (delta * np.sqrt(2)) ** 2 + delta ** 2)
  assert float(gm.voronoi_loss(split, true, gate)) == pytest.approx(expected, rel=1e-3)


def test_temperature_gate_rate_is_slow_activation_gate_polynomial(tmp_path):
  # Nguyen et al. 2024, Thms 1-4: the temperature gate's MLE converges slower than any polynomial, the
  # activation gate's polynomially. Measured (runlocal, exact-fitted k = 2, 4 repetitions, median over
  # them): activation slope -0.48 (loss 4.89 / 4.03 / 1.37 / 0.77 at n = 100 / 400 / 1,600 / 6,400),
  # temperature slope -0.14 (2.70 / 1.02 / 1.41 / 1.29: flat after n = 400); tau's error at n = 6,400:
  # 0.22 (temperature) vs 0.075 (activation). With 6 repetitions: -0.43 vs -0.20.
  r = temperature_moe.main(["--config=runlocal", f"--workdir={tmp_path}"])
  assert r["activation/slope"] < -0.3, r
  assert r["temperature/slope"] > r["activation/slope"] + 0.2, r
  assert r["temperature/loss/n6400"] > 0.5 * r["temperature/loss/n400"], r  # no progress in the tail
  assert r["temperature/tau_error/n6400"] > 2 * r["activation/tau_error/n6400"], r
  assert (tmp_path / "temperature_moe_rates.png").exists()
