"""SNNK (paper 8): random-feature maps against closed forms and brute force, layer shapes and parameter
counts, the bundled network's explicit solution against scikit-learn's ridge, and the paper's claims from
the experiment's CPU setting."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from experiments import snnk as experiment
from inception_zoo.errors import UserError
from inception_zoo.projects.snnk import snnk

X = jax.random.normal(jax.random.key(1), (6, 8)) * 0.3
W = jax.random.normal(jax.random.key(2), (8, 3)) * 0.3  # a Flax kernel: 8 inputs, 3 outputs
B = jnp.array([0.5, -0.2, 1.0])


@pytest.mark.parametrize("orthogonal", [False, True])
def test_relu_snnk_estimates_the_arccos_kernel(orthogonal):
  rf = snnk.draw(jax.random.key(0), "relu", 100_000, 8, orthogonal=orthogonal)
  est = snnk.input_features(rf, X) @ snnk.weight_features(rf, W)
  exact = snnk.arccos_kernel(X[:, None, :], W.T[None])
  # Brute-force check of the closed form itself: E[ReLU(g.x)^2] = |x|^2 / 2 at angle 0, 0 at angle pi.
  np.testing.assert_allclose(snnk.arccos_kernel(X, X), jnp.sum(X * X, -1) / 2, rtol=1e-5)
  np.testing.assert_allclose(snnk.arccos_kernel(X, -X), 0.0, atol=1e-6)
  np.testing.assert_allclose(est, exact, atol=0.01)  # Monte Carlo error ~ 0.002 at m = 1e5


@pytest.mark.parametrize("kind", ["cos", "sin", "exp"])
def test_universal_random_features_estimate_the_activation(kind):
  rf = snnk.draw(jax.random.key(0), kind, 100_000, 8)
  est = snnk.input_features(rf, X) @ snnk.weight_features(rf, W, B)
  np.testing.assert_allclose(est, snnk.activation(kind)(X @ W + B), atol=0.03)


def test_orthogonal_features_have_orthogonal_rows_within_a_block():
  g = snnk.orthogonal_gaussian(jax.random.key(0), 20, 8)  # blocks of 8, 8, 4 rows
  gram = g[:8] @ g[:8].T
  np.testing.assert_allclose(gram - jnp.diag(jnp.diag(gram)), 0.0, atol=1e-4)
  assert g.shape == (20, 8)


def test_snnk_dense_shapes_and_a_pretrained_layer():
  layer = snnk.SNNKDense(3, num_random_features=50_000, kind="cos", seed=4)
  params = layer.init(jax.random.key(0), X)["params"]
  assert params["psi"].shape == (100_000, 3)  # real and imaginary parts of 50,000 complex features
  assert layer.apply({"params": params}, X).shape == (6, 3)
  # Psi of a given (W, b) turns the layer into an estimate of cos(x W + b), with the layer's own G.
  psi = snnk.weight_features(layer.random_features(8), W, B)
  np.testing.assert_allclose(layer.apply({"params": {"psi": psi}}, X), jnp.cos(X @ W + B), atol=0.03)
  relu = snnk.SNNKDense(5, num_random_features=16)
  assert relu.init(jax.random.key(0), X)["params"]["psi"].shape == (16, 5)


def test_adapter_parameter_counts_and_identity_at_init():
  x = jax.random.normal(jax.random.key(0), (4, 96))
  for module, expected in [(snnk.SNNKAdapter(8), snnk.snnk_adapter_num_params(96, 8)),
                           (snnk.BottleneckAdapter(16), snnk.bottleneck_adapter_num_params(96, 16))]:
    variables = module.init(jax.random.key(1), x)
    assert sum(a.size for a in jax.tree.leaves(variables)) == expected
    np.testing.assert_allclose(module.apply(variables, x), x)  # zero scale / zero up-projection
  # BERT-base (d = 768), the official m = 8: 6,912 parameters per adapter, 14x below a bottleneck of 64.
  assert snnk.snnk_adapter_num_params(768, 8) == 6912
  assert snnk.bottleneck_adapter_num_params(768, 64) == 99_136


def test_bundled_fit_is_the_ridge_solution_and_a_stationary_point():
  rng = np.random.default_rng(0)
  phi, y = rng.normal(size=(50, 12)).astype(np.float32), rng.normal(size=(50, 2)).astype(np.float32)
  psi = snnk.bundled_fit(jnp.asarray(phi), jnp.asarray(y), ridge=0.5)
  reference = Ridge(alpha=0.5, fit_intercept=False).fit(phi, y).coef_.T
  np.testing.assert_allclose(psi, reference, rtol=1e-4, atol=1e-5)
  grad = jax.grad(lambda p: jnp.sum((phi @ p - y) ** 2) + 0.5 * jnp.sum(p ** 2))(psi)
  np.testing.assert_allclose(grad, 0.0, atol=1e-3)
  np.testing.assert_allclose(snnk.bundled_fit(jnp.asarray(phi), jnp.asarray(y)),
                             np.linalg.lstsq(phi, y, rcond=None)[0], rtol=1e-4, atol=1e-5)


def test_bad_input_is_a_one_line_error():
  with pytest.raises(UserError, match="unknown SNNK kind 'tanh'"):
    snnk.draw(jax.random.key(0), "tanh", 8, 4)
  rf = snnk.draw(jax.random.key(0), "relu", 8, 4)
  with pytest.raises(UserError, match="drawn for dimension 4"):
    snnk.input_features(rf, jnp.ones((2, 5)))
  with pytest.raises(UserError, match="no bias"):
    snnk.weight_features(rf, jnp.ones((4, 3)), jnp.ones((3,)))
  with pytest.raises(UserError, match=r"unknown setting 'huge' \(runlocal, "):
    experiment.get_config("huge")
  with pytest.raises(SystemExit):  # the GLUE setting is config only
    experiment.main(["--workdir=/tmp/unused"])


def test_snnk_claims(tmp_path):
  # Sehanobish et al. 2024, from the experiment's CPU setting run in full.
  r = experiment.main(["--config=runlocal", f"--workdir={tmp_path}"])
  # (a) Monte Carlo error ~ m^-1/2. Measured slopes -0.50 (ReLU), -0.51 (cos); errors at
  # m = 16 / 4096: 0.040 / 0.0026 (ReLU), 0.17 / 0.010 (cos).
  for kind in ("relu", "cos"):
    assert -0.6 < r[f"kernel/{kind}/slope"] < -0.4, r
    assert r[f"kernel/{kind}/error_m4096"] < r[f"kernel/{kind}/error_m16"] / 10
  # (b) The fully bundled network's explicit solution needs no backprop and matches Adam on held-out MSE
  # Measured 0.479 vs 0.479, train 0.4088 both (standardised target; the mean predictor scores ~1).
  assert r["bundle/closed_form/test_mse"] <= r["bundle/gd/test_mse"] + 0.005, r
  assert r["bundle/closed_form/train_mse"] <= r["bundle/gd/train_mse"] + 1e-4, r
  assert r["bundle/closed_form/test_mse"] < 0.6, r
  # (c) SNNK adapters: several times fewer trainable adapter parameters than a bottleneck adapter at
  # comparable accuracy (the paper: up to 5x). Measured 8,448 vs 33,152 adapter parameters (3.9x);
  # top-1 on 720 held-out digits 5-9: SNNK 0.961, bottleneck 0.972, head only 0.936 (one image = 0.0014).
  assert r["adapter/param_reduction"] > 3.5, r
  assert r["adapter/snnk/top1"] > r["adapter/bottleneck/top1"] - 0.025, r
  assert r["adapter/snnk/top1"] > r["adapter/head/top1"] + 0.01, r
  assert (tmp_path / "snnk.png").exists() and (tmp_path / "metrics.jsonl").exists()
