"""Paper 20 (Radhakrishnan, Belkin, Uhler 2022): the NTK recursion against independent references (a wide
network's autodiff NTK, the arc-cosine and arcsin closed forms, 2-D Gauss-Hermite quadrature), the
infinite-depth taxonomy, and the claim from the experiment's CPU setting."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from experiments import wide_deep_ntk
from inception_zoo.errors import UserError
from inception_zoo.projects.wide_deep_ntk import ntk_depth as nd

XI = np.array([-0.95, -0.5, 0.0, 0.3, 0.7, 0.95, 0.999])


def _gauss_expectation(f, xi, nodes=200):
  """E[f(u) f(v)] for unit Gaussians of correlation xi, by 2-D Gauss-Hermite quadrature in numpy."""
  z, w = np.polynomial.hermite_e.hermegauss(nodes)
  w = w / math.sqrt(2 * math.pi)
  u, v = z[:, None], xi * z[:, None] + math.sqrt(1 - xi**2) * z[None, :]
  return float(np.sum(w[:, None] * w[None, :] * f(u) * f(v)))


def test_relu_dual_is_the_arc_cosine_kernel():
  # E[relu(u) relu(v)] * 2 by scipy quad over u > 0, with E_z[relu(xi u + s z)] = m Phi(m / s) + s phi(m / s)
  # (m = xi u, s = sqrt(1 - xi^2)); E[1(u > 0) 1(v > 0)] * 2 by Sheppard's orthant formula.
  def ref_g(xi):
    s = math.sqrt(1 - xi**2)
    inner = lambda u: xi * u * stats.norm.cdf(xi * u / s) + s * stats.norm.pdf(xi * u / s)
    return 2 * integrate.quad(lambda u: u * stats.norm.pdf(u) * inner(u), 0, np.inf, epsabs=1e-12)[0]
  with jax.enable_x64(True):
    d = nd.relu_dual()
    g, dg = np.asarray(d.g(jnp.asarray(XI))), np.asarray(d.dg(jnp.asarray(XI)))
    grad = np.asarray(jax.vmap(jax.grad(d.g))(jnp.asarray(XI)))
  np.testing.assert_allclose(g, [ref_g(x) for x in XI], atol=1e-9)
  np.testing.assert_allclose(dg, 2 * (0.25 + np.arcsin(XI) / (2 * np.pi)), atol=1e-12)
  np.testing.assert_allclose(dg, grad, rtol=1e-9)


def test_general_activation_dual_matches_erf_closed_form():
  # Williams 1998: E[erf(u) erf(v)] = 2/pi arcsin(2 xi / 3) for unit Gaussians of correlation xi.
  with jax.enable_x64(True):
    d = nd.activation_dual(jax.scipy.special.erf, "erf")
    g, dg = np.asarray(d.g(jnp.asarray(XI))), np.asarray(d.dg(jnp.asarray(XI)))
  ref = np.arcsin(2 * XI / 3) / np.arcsin(2 / 3)
  np.testing.assert_allclose(g, ref, atol=1e-7)
  np.testing.assert_allclose(dg, (2 / 3) / np.sqrt(1 - (2 * XI / 3) ** 2) / np.arcsin(2 / 3), atol=1e-5)
  # Polynomial activations: their Hermite coefficients come back exactly.
  coeffs = np.array([0.0, 0.6, 0.0, 0.8])
  a = nd.hermite_coefficients(nd.hermite_activation(coeffs), num=6)
  np.testing.assert_allclose(a, np.r_[coeffs, 0, 0], atol=1e-10)
  g = _gauss_expectation(lambda t: np.asarray(nd.hermite_activation(coeffs)(jnp.asarray(t, jnp.float32))), 0.4)
  assert abs(g - (0.36 * 0.4 + 0.64 * 0.4**3)) < 1e-4


@pytest.mark.parametrize("act", ["relu", "hermite"])
def test_recursion_matches_wide_network_ntk(act):
  # The autodiff NTK J J^T of width-1024 networks, averaged over 8 draws, against the recursion; for one
  # ReLU layer also against the arc-cosine closed form Theta = xi k1'(xi) + k1(xi) written out here.
  phi, dual = ((lambda h: math.sqrt(2) * jax.nn.relu(h), nd.relu_dual()) if act == "relu" else
               (nd.hermite_activation([0.0, 0.6, 0.8]), nd.hermite_dual([0.0, 0.6, 0.8])))
  x = jax.random.normal(jax.random.key(0), (5, 3))
  x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
  xi = np.clip(np.asarray(x @ x.T, np.float64), -1, 1)
  ntk_of = jax.jit(lambda p: nd.empirical_ntk(p, x, phi))
  for depth in ((1, 2) if act == "relu" else (2,)):
    emp = np.mean([ntk_of(nd.init_mlp(jax.random.key(s), 3, 1024, depth)) for s in range(8)], axis=0)
    with jax.enable_x64(True):
      theory = np.asarray(nd.ntk(jnp.asarray(xi), dual, depth)[1])
    err = np.linalg.norm(emp - theory) / np.linalg.norm(theory)
    assert err < 0.05, (act, depth, err)  # measured: relu 0.020 / 0.024 (depth 1 / 2), hermite 0.016
    if act == "relu" and depth == 1:
      k1 = (np.sqrt(1 - xi**2) + (np.pi - np.arccos(xi)) * xi) / np.pi
      np.testing.assert_allclose(theory, xi * (np.pi - np.arccos(xi)) / np.pi + k1, atol=1e-12)


def test_normalized_ntk_and_taxonomy():
  with jax.enable_x64(True):
    relu, sing = nd.relu_dual(), nd.hermite_dual(nd.consistent_activation(2))
    for d in (relu, sing):
      _, theta = nd.ntk(jnp.asarray(np.r_[XI, 1.0]), d, 20)
      np.testing.assert_allclose(nd.normalized_ntk(jnp.asarray(XI), d, 20), theta[:-1] / theta[-1], rtol=1e-10)
    # Deep ReLU: the normalised kernel tends to 1/4 off the diagonal (so the interpolant is c * sum y).
    assert np.all(np.abs(np.asarray(nd.normalized_ntk(jnp.asarray(XI[:-1]), relu, 3000)) - 0.25) < 0.02)
    lim = nd.taxonomy(relu)
    assert lim.kind == "majority_vote" and abs(lim.a0_sq - 1 / math.pi) < 1e-12 and lim.rho == 1.0
    lim = nd.taxonomy(sing)
    assert lim.kind == "singular" and abs(lim.alpha - 2) < 1e-9 and abs(lim.a1_sq - 1 / 3) < 1e-9
    assert nd.taxonomy(nd.hermite_dual([0, 0, 0.6, 0.8])).kind == "nearest_neighbour"
    # a_0 != 0 with rho = 1.8 > 1 is a majority vote too (the diagonal outgrows a bounded off-diagonal).
    other_vote = nd.hermite_dual([0.1 ** 0.5, 0, 0.9 ** 0.5])
    assert nd.taxonomy(other_vote).kind == "majority_vote"
    x = jax.random.normal(jax.random.key(1), (70, 3))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jnp.where(x[:20, 0] > 0.3, 1.0, -1.0)
    assert np.all(np.asarray(nd.ntk_predict(x[:20], y, x[20:], other_vote, 300)) == np.sign(y.sum()))
    assert nd.taxonomy(nd.hermite_dual([0.6 ** 0.5, 0.2 ** 0.5, 0.2 ** 0.5])).kind == "other"  # rho = 0.6
    with pytest.raises(UserError, match="linear"):
      nd.taxonomy(nd.hermite_dual([0, 1.0]))


def test_singular_limit_is_koenigs_function_with_power_alpha():
  with jax.enable_x64(True):
    d = nd.hermite_dual(nd.consistent_activation(3))
    lim = nd.taxonomy(d)
    xi = jnp.asarray(np.delete(XI, 2))  # h(0) = 0: no ratio there
    h = nd.singular_kernel(xi, d)
    np.testing.assert_allclose(nd.singular_kernel(d.g(xi), d), lim.a1_sq * h, rtol=1e-9)  # h(g) = a_1^2 h
    # h(1 - eps) ~ eps^(-alpha / 2) = ||x - x'||^-alpha: compare eps and eps / rho^5.
    eps = 1e-5 * lim.rho ** -np.arange(0, 10, 5)
    hs = np.asarray(nd.singular_kernel(jnp.asarray(1 - eps), d, iterations=300))
    slope = np.log(hs[1] / hs[0]) / np.log(eps[0] / eps[1])
    assert abs(slope - lim.alpha / 2) < 1e-3, slope
    # Finite depths approach h (up to a constant) at rate ~ 1 / L.
    errs = []
    for depth in (50, 200):
      t = np.asarray(nd.normalized_ntk(xi, d, depth))
      ratio = (t / np.asarray(h)) / (t[2] / float(h[2]))
      errs.append(np.max(np.abs(ratio - 1)))
    assert errs[1] < 0.4 * errs[0], errs
    x = jax.random.normal(jax.random.key(2), (50, 3))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    y = jnp.where(x[:20, 0] > 0, 1.0, -1.0)
    whole = nd.limit_predict(x[:20], y, x[20:], d, iterations=60)
    np.testing.assert_array_equal(nd.limit_predict(x[:20], y, x[20:], d, iterations=60, chunk=15), whole)


def test_bad_input_is_a_user_error():
  with pytest.raises(UserError, match="sum"):
    nd.hermite_dual([0.5, 0.5])
  with pytest.raises(UserError, match="even"):
    nd.consistent_activation(2, k=3)
  with pytest.raises(UserError, match="depth"):
    nd.ntk(jnp.zeros(3), nd.relu_dual(), -1)
  with pytest.raises(UserError, match="unit vectors"):
    nd.ntk_predict(jnp.ones((4, 3)), jnp.ones(4), jnp.ones((2, 3)), nd.relu_dual(), 3)
  with jax.enable_x64(True), pytest.raises(UserError, match="underflows"):
    x = jnp.eye(3)
    alpha4 = nd.hermite_dual(nd.consistent_activation(4))
    nd.ntk_predict(x, jnp.ones(3), x[:1] * 0.6 + x[1:2] * 0.8, alpha4, 200)
  with jax.enable_x64(True), pytest.raises(UserError, match="singular"):  # rho = 0.6: every entry -> 1
    x = jnp.eye(3)
    nd.ntk_predict(x, jnp.ones(3), x[:1], nd.hermite_dual([0.6 ** 0.5, 0.2 ** 0.5, 0.2 ** 0.5]), 100)
  with pytest.raises(UserError, match="unknown setting"):
    wide_deep_ntk.get_config("gpu")


def test_wide_deep_ntk_taxonomy_and_optimality(tmp_path):
  # Radhakrishnan et al. 2022: deep ReLU NTK -> majority vote, a_2 h_2 + a_3 h_3 -> 1-NN, and the
  # singular kernel with alpha = d approaches the Bayes error (0.1) as n grows while 1-NN stays near
  # 2 * 0.1 * 0.9 = 0.18. Measured (1,000 test points; one point = 0.001): agreement with DummyClassifier
  # 0.713 / 0.664 / 0.741 / 0.993 at depth 1 / 10 / 100 / 1000; with 1-NN 0.529 / 0.98 / 1.0 at depth
  # 2 / 4 / 8; singular depth 300 vs its limit 0.995. Errors at n = 100 / 300 / 1000 / 3000: alpha = 2
  # 0.148 / 0.137 / 0.116 / 0.117, alpha = 4 0.200 / 0.186 / 0.160 / 0.168, 1-NN 0.188 / 0.201 /
  # 0.185 / 0.188, majority 0.353.
  r = wide_deep_ntk.main(["--config=runlocal", f"--workdir={tmp_path}"])
  assert r["relu/agreement@L1000"] >= 0.98 and r["relu/agreement@L1"] < 0.9, r
  assert r["nearest/agreement@L8"] >= 0.99 and r["nearest/agreement@L2"] < 0.9, r
  assert r["singular/agreement@L300"] >= 0.97, r
  assert r["relu/limit_matches_dummy"] == 1.0 and r["nearest/limit_matches_knn"] == 1.0
  ns = (100, 300, 1000, 3000)
  sing, knn = [r[f"singular/error@n{n}"] for n in ns], [r[f"knn/error@n{n}"] for n in ns]
  assert sing[-1] < 0.1 + 0.04 and sing[-1] < sing[0] - 0.015, sing  # towards Bayes
  assert min(knn) > 0.1 + 0.06 and sing[-1] < knn[-1] - 0.04, (sing, knn)  # 1-NN stays above
  assert sing[-1] < r["singular_2d/error@n3000"] < r["majority/error@n3000"]
  assert (tmp_path / "wide_deep_ntk.png").exists()
