"""Paper 27, Prob-PSENN: the uncertainty measures against numpy, the reparameterised prototypes against
their moments, the KL against torch.distributions, Li et al.'s loss terms against a brute-force oracle,
the full-setting loader on mocked tfds, and the digits claim."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
import torch

from experiments import prob_psenn
from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.projects.prob_psenn import psenn, run as driver


def _np_entropy(p):
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1)


def test_uncertainty_measures_match_numpy_and_mi_vanishes_when_draws_agree():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(5) * 0.5, size=(16, 7))  # (S, N, C)
  probs[0, 0] = [1.0, 0.0, 0.0, 0.0, 0.0]  # 0 log 0 = 0
  measures = jax.jit(psenn.uncertainty)
  u = measures(jnp.asarray(probs, jnp.float32))
  predictive, expected = _np_entropy(probs.mean(0)), _np_entropy(probs).mean(0)
  np.testing.assert_allclose(u["predictive_entropy"], predictive, rtol=1e-5)
  np.testing.assert_allclose(u["expected_entropy"], expected, rtol=1e-5)
  np.testing.assert_allclose(u["mutual_information"], predictive - expected, atol=1e-5)
  assert np.all(predictive - expected > 0)  # Jensen: strictly positive when draws disagree
  agree = measures(jnp.asarray(np.repeat(probs[:1], 16, 0), jnp.float32))
  np.testing.assert_allclose(agree["mutual_information"], 0.0, atol=1e-6)
  np.testing.assert_allclose(agree["predictive_entropy"], _np_entropy(probs[0]), rtol=1e-5)
  uniform = measures(jnp.full((16, 7, 5), 0.2))
  np.testing.assert_allclose(uniform["predictive_entropy"], np.log(5), rtol=1e-6)  # the maximum


def test_reparameterised_prototypes_have_the_right_moments_and_gradients():
  mu = jnp.array([[0.5, -1.0, 2.0], [0.0, 3.0, -0.5]])
  sigma = jnp.array([[0.1, 1.0, 2.0], [0.5, 0.05, 1.5]])
  draws = jax.jit(psenn.sample_prototypes, static_argnums=3)(mu, sigma, jax.random.key(0), 40000)
  assert draws.shape == (40000, 2, 3)
  np.testing.assert_allclose(draws.mean(0), mu, atol=4 * 2.0 / np.sqrt(40000))
  np.testing.assert_allclose(draws.std(0), sigma, rtol=0.02)
  # d E[p] / d mu = 1 and d E[(p - mu)^2] / d sigma = 2 sigma, through the draws
  g_mu = jax.jit(jax.grad(lambda m: psenn.sample_prototypes(m, sigma, jax.random.key(1), 4).mean(0).sum()))(mu)
  np.testing.assert_allclose(g_mu, 1.0, rtol=1e-6)
  g_sigma = jax.jit(jax.grad(lambda s: ((psenn.sample_prototypes(mu, s, jax.random.key(1), 40000) - mu) ** 2)
                             .mean(0).sum()))(sigma)
  np.testing.assert_allclose(g_sigma, 2 * sigma, rtol=0.03)


def test_gaussian_kl_matches_torch():
  rng = np.random.default_rng(1)
  mu, sigma = rng.normal(size=(4, 6)), rng.uniform(0.1, 2.0, size=(4, 6))
  for prior_std in (1.0, 0.3):
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(torch.tensor(mu), torch.tensor(sigma)),
        torch.distributions.Normal(torch.zeros(4, 6, dtype=torch.float64), prior_std)).sum().item()
    assert float(psenn.gaussian_kl(jnp.asarray(mu), jnp.asarray(sigma), prior_std)) == pytest.approx(
        expected, rel=1e-5)
  assert float(psenn.gaussian_kl(jnp.zeros((2, 3)), jnp.ones((2, 3)), 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_psenn_forward_and_losses_match_a_brute_force_oracle():
  x = jax.random.uniform(jax.random.key(0), (6, 64))
  y = jnp.array([0, 1, 2, 0, 1, 2])
  model = psenn.PSENN(num_classes=3, prototypes_per_class=2, hidden=(8,), latent_dim=4, sigma_init=0.3)
  params = jax.jit(model.init)(jax.random.key(1), x, jax.random.key(2))["params"]

  def total(q):  # every term, so that every parameter (the decoder too) must get a gradient
    logits, aux = model.apply({"params": q}, x, jax.random.key(3), 5)
    losses = psenn.psenn_losses(logits, aux, x, y)
    return sum(losses.values()) + psenn.gaussian_kl(q["mu"], jax.nn.softplus(q["rho"]), 1.0), (logits, aux, losses)

  (_, (logits, aux, losses)), grads = jax.jit(jax.value_and_grad(total, has_aux=True))(params)
  assert logits.shape == (5, 6, 3) and aux["prototypes"].shape == (5, 6, 4) and aux["recon"].shape == (6, 64)
  z, p = np.asarray(aux["z"], np.float64), np.asarray(aux["prototypes"], np.float64)
  d = ((z[None, :, None] - p[:, None]) ** 2).sum(-1)  # (S, N, K)
  np.testing.assert_allclose(aux["distances"], d, rtol=1e-4, atol=1e-5)
  oracle_logits = np.log(np.exp(-d).reshape(5, 6, 3, 2).sum(-1))  # prototypes 2c, 2c + 1 belong to class c
  np.testing.assert_allclose(logits, oracle_logits, rtol=1e-4, atol=1e-5)
  log_probs = oracle_logits - np.log(np.exp(oracle_logits).sum(-1, keepdims=True))
  assert float(losses["ce"]) == pytest.approx(-log_probs[:, np.arange(6), np.asarray(y)].mean(), rel=1e-4)
  assert float(losses["r1"]) == pytest.approx(np.mean([d[s, :, j].min() for s in range(5) for j in range(6)]),
                                              rel=1e-4)
  assert float(losses["r2"]) == pytest.approx(np.mean([d[s, i].min() for s in range(5) for i in range(6)]),
                                              rel=1e-4)
  assert float(losses["recon"]) == pytest.approx(np.mean(((np.asarray(aux["recon"]) - np.asarray(x)) ** 2)
                                                         .sum(-1)), rel=1e-5)
  assert all(jnp.any(g != 0) for g in jax.tree.leaves(grads))
  point = psenn.PSENN(num_classes=3, hidden=(8,), latent_dim=4, probabilistic=False)
  point_params = jax.eval_shape(point.init, jax.random.key(1), x)["params"]
  assert "rho" not in point_params and jax.eval_shape(point.apply, {"params": point_params}, x)[0].shape == (1, 6, 3)
  with pytest.raises(UserError, match="needs a PRNG key"):
    jax.eval_shape(model.apply, {"params": params}, x)
  with pytest.raises(UserError, match="expects flat inputs"):
    model.apply({"params": params}, x.reshape(6, 8, 8), jax.random.key(0))


def test_explanation_variability_counts_changes_of_the_nearest_prototype():
  d = jnp.array([[[0.1, 1.0, 2.0], [5.0, 0.2, 3.0]],
                 [[0.2, 1.0, 2.0], [5.0, 4.0, 3.0]],
                 [[0.3, 1.0, 2.0], [0.1, 4.0, 3.0]],
                 [[0.4, 1.0, 2.0], [5.0, 0.3, 3.0]]])  # (S=4, N=2, K=3)
  np.testing.assert_allclose(psenn.explanation_variability(d), [0.0, 0.5])  # input 1: prototype 1 in 2 of 4


def test_ood_sets_and_full_setting_loader():
  images = np.random.default_rng(0).uniform(size=(5, 8, 8)).astype(np.float32)
  sets = driver.ood_sets(images, ("inverted", "rotated", "noise", "patches"), np.random.default_rng(1), 4)
  for name, ood in sets.items():
    assert ood.shape == (5, 8, 8) and 0 <= ood.min() <= ood.max() <= 1, name
  np.testing.assert_allclose(sets["inverted"], 1 - images)
  np.testing.assert_allclose(sets["rotated"][:, 0, :], images[:, :, -1])
  with tfds.testing.mock_data(num_examples=5):
    x, y = datasets.grey_images(prob_psenn.get_config().data, "train")
  assert x.shape == (5, 28, 28) and y.shape == (5,) and 0 <= x.min() <= x.max() <= 1
  with pytest.raises(UserError, match="unknown OOD set 'blur'"):
    driver.ood_sets(images, ("blur",), np.random.default_rng(1), 4)
  with pytest.raises(UserError, match="unknown setting 'x'"):
    prob_psenn.get_config("x")


@pytest.mark.slow
def test_probabilistic_prototypes_keep_accuracy_and_their_mi_detects_ood(tmp_path):
  # Vadillo et al. 2024, Sec. 4-5, on 360 held-out digits (one digit = 0.0028), 64 prototype draws.
  # Measured: accuracy point 0.983, prob 0.981; MI AUROC vs inverted 0.96, rotated 0.81, uniform noise
  # 0.85, image patches 0.90; mean MI test 0.011 nats, OOD 0.07-0.16; mean sigma 0.21.
  r = prob_psenn.main(["--config=runlocal", f"--workdir={tmp_path}"])
  assert r["point/accuracy"] > 0.95 and r["prob/accuracy"] > r["point/accuracy"] - 0.02, r  # within 7 digits
  for split in ("inverted", "noise", "patches"):
    assert r[f"prob/auroc/mutual_information/{split}"] > 0.75, (split, r)
  # Rotated digits are not asserted: many still read as (other) digits, and their AUROC swings with the
  # seed (0.81 here, 0.17 with --config.seed=1, where the three others reach 0.97-0.98).
  assert r["prob/mean_mi/test"] < 0.5 * min(r[f"prob/mean_mi/{s}"] for s in ("inverted", "noise", "patches")), r
  assert r["prob/sigma_mean"] > 0.05  # the KL kept the prototypes distributions, not points
  assert (tmp_path / "prob_psenn_prototypes.png").exists() and (tmp_path / "prob_psenn_ood.png").exists()
