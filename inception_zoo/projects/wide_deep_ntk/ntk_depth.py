"""Neural tangent kernels of wide fully connected networks at any depth, and their infinite-depth limits
(Radhakrishnan, Belkin, Uhler, "Wide and Deep Neural Networks Achieve Optimality for Classification",
arXiv:2204.14126, 2022; PNAS 2023 as "Wide and deep neural networks achieve consistency for
classification"), paper 20 of the zoo.

Inputs lie on the unit sphere, so every kernel is a function of xi = <x, x'>. An activation phi enters
through its normalised dual g(xi) = E[phi(u) phi(v)] for unit Gaussians of correlation xi, with
E[phi(z)^2] = 1 so that g(1) = 1. With phi = sum_k a_k h_k in the orthonormal (probabilists') Hermite
basis, g(xi) = sum_k a_k^2 xi^k. A network with L hidden layers (NTK parametrisation, no biases) has
  Sigma^(0) = Theta^(0) = xi,  Sigma^(l) = g(Sigma^(l-1)),  Theta^(l) = Theta^(l-1) g'(Sigma^(l-1)) + Sigma^(l),
and the NTK classifier is sign(Theta(x, X) Theta(X, X)^-1 y) with labels y in {-1, +1}. Deep kernels
need float64: call these functions under `jax.enable_x64(True)` (the experiment does).

The taxonomy of the L -> infinity classifiers is read off three numbers of the dual: a_0^2 = g(0),
a_1^2 = g'(0) and rho = g'(1). This is our reading of the paper's theorem, derived from the recursion
(the paper's own statement was not available to us):
  * a_0 != 0, rho >= 1 (ReLU: a_0^2 = 1/pi, rho = 1): every off-diagonal entry of the normalised kernel
    Theta^(L) / Theta^(L)(1) tends to one constant (1/4 for ReLU); when rho > 1 the off-diagonal entries
    tend to one finite constant while the diagonal grows like rho^L. Either way the interpolant tends to a
    positive multiple of sum_i y_i everywhere off the data: majority vote.
  * a_0 = 0, a_1 = 0: Sigma^(L) falls super-exponentially (like xi^(k^L)), the nearest training point
    outweighs all others: 1-nearest neighbour.
  * a_0 = 0, 0 < a_1^2 < 1 (so rho > 1): Theta^(L)(xi) / (L a_1^(2L)) -> h(xi), the Koenigs function of g
    at its fixed point 0 (h(g(xi)) = a_1^2 h(xi), h'(0) = 1), and the classifier is the kernel vote
    sign(sum_i h(<x, x_i>) y_i). h blows up at xi = 1 like ||x - x'||^-alpha, alpha = 2 ln(1/a_1^2) / ln rho:
    a singular kernel classifier. At finite depth the kernel is about h(xi) (L + O(1 / (1 - xi))), so
    the limit needs L >> 1 / (1 - xi) for the nearest training points. With alpha equal to the data's
    intrinsic dimension d (data on S^d) this is Devroye, Gyorfi and Krzyzak's Hilbert kernel rule, which
    is consistent: the paper's optimal networks. `consistent_activation` builds one from two Hermite
    terms (our choice of family: phi = a_1 h_1 + a_k h_k with k even; for d = 2, k = 4 gives a_1^2 = 1/3,
    rho = 3, alpha = 2 exactly).
  * a_0 != 0, rho < 1 (a large constant part): all Sigma^(L) -> 1 and the kernel tends to a constant plus
    an O(rho^L) distance term, whose interpolant is an ordinary smooth one: none of the three (reported as
    "other").
"""
import math
from typing import Callable, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from inception_zoo.errors import UserError

ArrayFn = Callable[[jax.Array], jax.Array]


class Dual(NamedTuple):
  """A normalised dual activation: g and g' on [-1, 1], g(1) = 1."""
  name: str
  g: ArrayFn
  dg: ArrayFn


# ---------------------------------------------------------------------------------------------------
# Dual activations.

def relu_dual() -> Dual:
  """sqrt(2) * ReLU: the arc-cosine kernel of degree 1 (Cho & Saul 2009), closed form."""
  def g(xi):
    xi = jnp.clip(xi, -1.0, 1.0)
    return (jnp.sqrt(1.0 - xi**2) + (jnp.pi - jnp.arccos(xi)) * xi) / jnp.pi

  def dg(xi):
    return (jnp.pi - jnp.arccos(jnp.clip(xi, -1.0, 1.0))) / jnp.pi
  return Dual("relu", g, dg)


def hermite_dual(coeffs: Sequence[float], name: str = "hermite") -> Dual:
  """The dual of phi = sum_k coeffs[k] h_k (orthonormal Hermite h_k): g(xi) = sum_k coeffs[k]^2 xi^k."""
  c2 = np.asarray(coeffs, np.float64) ** 2
  if c2.ndim != 1 or not c2.size or abs(c2.sum() - 1.0) > 1e-6:
    raise UserError(f"Hermite coefficients must have squares summing to 1 (E[phi(z)^2] = 1), got "
                    f"{c2.sum():.6g}")
  c2 = c2 / c2.sum()  # g(1) = 1 to the ulp
  # numpy float64 constants take the dtype of xi at call time (float64 under jax.enable_x64).
  powers, slopes = c2, c2[1:] * np.arange(1, c2.size)
  return Dual(name, lambda xi: jnp.polyval(powers[::-1], xi),
              lambda xi: jnp.polyval(slopes[::-1], xi) if slopes.size else jnp.zeros_like(xi))


def hermite_basis(x, num: int):
  """Orthonormal probabilists' Hermite polynomials h_0..h_{num-1} at x, stacked last (E[h_j h_k] = d_jk)."""
  hs = [jnp.ones_like(x), x]
  for k in range(1, num - 1):  # h_{k+1} = (x h_k - sqrt(k) h_{k-1}) / sqrt(k + 1): stable for large k
    hs.append((x * hs[k] - math.sqrt(k) * hs[k - 1]) / math.sqrt(k + 1))
  return jnp.stack(hs[:num], -1)


def hermite_activation(coeffs: Sequence[float]) -> ArrayFn:
  """phi(x) = sum_k coeffs[k] h_k(x): a polynomial activation with dual `hermite_dual(coeffs)`."""
  c = np.asarray(coeffs, np.float64)
  return lambda x: hermite_basis(x, c.size) @ jnp.asarray(c, x.dtype)


def hermite_coefficients(fn: ArrayFn, num: int = 40, nodes: int = 160) -> np.ndarray:
  """a_k = E[fn(z) h_k(z)], z ~ N(0, 1), k < num, by Gauss-Hermite quadrature (exact for polynomials of
  degree < 2 * nodes - num; smooth activations are resolved to float64 precision)."""
  z, w = np.polynomial.hermite_e.hermegauss(nodes)
  w = w / math.sqrt(2 * math.pi)
  with jax.enable_x64(True):
    vals = np.asarray(fn(jnp.asarray(z)), np.float64)
    basis = np.asarray(hermite_basis(jnp.asarray(z), num))
  return (w * vals) @ basis


def activation_dual(fn: ArrayFn, name: str, num: int = 40) -> Dual:
  """The normalised dual of any activation from its first `num` Hermite coefficients (our choice: the
  series is truncated there and rescaled to g(1) = 1; exact for smooth activations whose coefficients
  decay fast, e.g. tanh, erf, GELU)."""
  a = hermite_coefficients(fn, num)
  norm = math.sqrt(float(a @ a))
  if norm == 0.0:
    raise UserError(f"activation '{name}' is zero on the Gaussian measure: it has no dual")
  return hermite_dual(a / norm, name)


# ---------------------------------------------------------------------------------------------------
# The NTK recursion and its infinite-depth limit.

def _check_xi(xi):
  xi = jnp.asarray(xi)
  if not jnp.issubdtype(xi.dtype, jnp.floating):
    raise UserError(f"inner products must be floating point, got {xi.dtype}")
  return jnp.clip(xi, -1.0, 1.0)


def _next_sigma(dual: Dual, sigma):
  # g(1) = 1 exactly, and Sigma is a correlation in [-1, 1]: when rho > 1 the fixed point 1 repels, so
  # the ulp by which a rounded g(1) misses 1 would grow like rho^L and carry <x, x> away from 1.
  return jnp.where(sigma >= 1.0, 1.0, jnp.clip(dual.g(sigma), -1.0, 1.0))


def ntk(xi, dual: Dual, depth: int) -> Tuple[jax.Array, jax.Array]:
  """(Sigma^(depth), Theta^(depth)) at inner products `xi` (any shape): the raw recursion."""
  if depth < 0:
    raise UserError(f"depth must be >= 0, got {depth}")
  xi = _check_xi(xi)

  def layer(carry, _):
    sigma, theta = carry
    new_sigma = _next_sigma(dual, sigma)
    return (new_sigma, theta * dual.dg(sigma) + new_sigma), None
  (sigma, theta), _ = jax.lax.scan(layer, (xi, xi), None, length=depth)
  return sigma, theta


def normalized_ntk(xi, dual: Dual, depth: int) -> jax.Array:
  """Theta^(depth)(xi) / Theta^(depth)(1): the same classifier, rescaled every layer so that no depth
  overflows (Theta(1) grows like rho^L); entries far below 1 may underflow to 0, as they do in the limit."""
  if depth < 0:
    raise UserError(f"depth must be >= 0, got {depth}")
  xi = _check_xi(xi)
  flat = jnp.concatenate([xi.reshape(-1), jnp.ones((1,), xi.dtype)])  # the last entry tracks Theta(1)

  def layer(carry, _):
    sigma, theta, inv_scale = carry  # theta = Theta^(l) / Theta^(l)(1), inv_scale = 1 / Theta^(l)(1)
    new_sigma = _next_sigma(dual, sigma)
    grown = theta * dual.dg(sigma) + new_sigma * inv_scale  # Theta^(l+1) / Theta^(l)(1)
    return (new_sigma, grown / grown[-1], inv_scale / grown[-1]), None
  (_, theta, _), _ = jax.lax.scan(layer, (flat, flat, jnp.ones((), xi.dtype)), None, length=depth)
  return theta[:-1].reshape(xi.shape)


class Limit(NamedTuple):
  """The infinite-depth classifier of a dual: kind in {majority_vote, nearest_neighbour, singular,
  other}; alpha = the singular exponent (||x - x'||^-alpha), else nan."""
  kind: str
  alpha: float
  a0_sq: float
  a1_sq: float
  rho: float


def taxonomy(dual: Dual, tol: float = 1e-9) -> Limit:
  """Which classifier the L -> infinity NTK of `dual` implements (module docstring: our derivation)."""
  a0, a1, rho = (float(v) for v in (dual.g(jnp.zeros(())), dual.dg(jnp.zeros(())), dual.dg(jnp.ones(()))))
  if abs(1.0 - float(dual.g(jnp.ones(())))) > 1e-6:
    raise UserError(f"dual '{dual.name}' is not normalised: g(1) = {float(dual.g(jnp.ones(()))):.6g}")
  if a0 > tol:
    kind = "majority_vote" if rho >= 1.0 - tol else "other"
    return Limit(kind, math.nan, a0, a1, rho)
  if a1 <= tol:
    return Limit("nearest_neighbour", math.nan, a0, a1, rho)
  if rho <= 1.0 + tol:
    raise UserError(f"dual '{dual.name}' is linear (g(xi) = xi): the network is a linear model")
  return Limit("singular", 2.0 * math.log(1.0 / a1) / math.log(rho), a0, a1, rho)


def singular_kernel(xi, dual: Dual, iterations: int = 200) -> jax.Array:
  """The Koenigs function h(xi) = lim_L g^L(xi) / a_1^(2L) of a singular-class dual: the infinite-depth
  NTK's kernel up to a constant; +inf at xi = 1. `iterations` must carry g^L(xi) to ~0 for the largest
  xi < 1 used (about log(1/(1 - xi)) / log(rho) steps to leave 1, then geometric decay)."""
  lim = taxonomy(dual)
  if lim.kind != "singular":
    raise UserError(f"dual '{dual.name}' has a {lim.kind} limit, not a singular kernel")
  xi = _check_xi(xi)

  def step(s, _):
    return _next_sigma(dual, s), None
  s, _ = jax.lax.scan(step, xi, None, length=iterations)
  # g^L(xi) / a_1^(2L) in logs: a_1^(2L) itself underflows long before g^L(xi) does in float64.
  log_h = jnp.log(jnp.abs(s)) - iterations * math.log(lim.a1_sq)
  return jnp.where(xi >= 1.0, jnp.inf, jnp.sign(s) * jnp.exp(log_h))


def consistent_activation(d: float, k: int = 4) -> np.ndarray:
  """Hermite coefficients (a_0..a_k) of phi = a_1 h_1 + a_k h_k whose infinite-depth NTK is singular
  with alpha = d: the Hilbert kernel ||x - x'||^-d for data on S^d (our reading of the paper's explicit
  optimal activations). alpha = 2 ln(1/a_1^2) / ln(a_1^2 + k (1 - a_1^2)) covers (2 / (k - 1), inf).
  k must be even: an odd phi has g(-1) = -1, so h is odd and the antipode of every training point is a
  second, negative singularity that votes against its label (the rule is then not consistent)."""
  if k < 2 or k % 2 or d <= 2.0 / (k - 1):
    raise UserError(f"the family a_1 h_1 + a_k h_k needs an even k >= 2 with d > 2 / (k - 1); got k = {k}, "
                    f"d = {d}")

  def alpha_minus_d(lam):
    return 2.0 * math.log(1.0 / lam) / math.log(lam + k * (1.0 - lam)) - d
  lam = optimize.brentq(alpha_minus_d, 1e-12, 1.0 - 1e-12, xtol=1e-15)
  coeffs = np.zeros(k + 1)
  coeffs[1], coeffs[k] = math.sqrt(lam), math.sqrt(1.0 - lam)
  return coeffs


# ---------------------------------------------------------------------------------------------------
# Classifiers.

def _check_sphere(*xs):
  for x in xs:
    if x.ndim != 2 or not jnp.allclose(jnp.linalg.norm(x, axis=1), 1.0, atol=1e-5):
      raise UserError(f"inputs must be a (n, d) array of unit vectors (the kernels live on the sphere), "
                      f"got shape {x.shape}")


def ntk_predict(x_train, y_train, x_test, dual: Dual, depth: int) -> jax.Array:
  """The depth-`depth` NTK classifier sign(Theta(x, X) Theta(X, X)^-1 y) (gradient descent to convergence
  on the square loss, infinite width) on unit-norm inputs, labels in {-1, +1} (0 = tie)."""
  _check_sphere(x_train, x_test)
  n = x_train.shape[0]
  # <x_i, x_i> exactly 1: a few ulps below 1 is a distinct point to a deep kernel with rho > 1.
  gram = (x_train @ x_train.T).at[jnp.arange(n), jnp.arange(n)].set(1.0)
  k = normalized_ntk(jnp.concatenate([gram, x_test @ x_train.T]), dual, depth)
  if bool(jnp.any(jnp.all(k[n:] == 0, axis=1))):
    raise UserError(f"at depth {depth} the '{dual.name}' kernel underflows float64 off the diagonal (it "
                    f"falls like (a_1^2 / rho)^L); use a smaller depth or limit_predict")
  f = k[n:] @ jnp.linalg.solve(k[:n], y_train)
  if not bool(jnp.all(jnp.isfinite(f))):
    raise UserError(f"at depth {depth} the '{dual.name}' kernel matrix is singular in float64 (its entries "
                    f"agree to the last digit); use a smaller depth")
  return jnp.sign(f)


def limit_predict(x_train, y_train, x_test, dual: Dual, iterations: int = 200, chunk: int = 1024) -> jax.Array:
  """The infinite-depth classifier of `dual` on unit-norm inputs, labels in {-1, +1} (0 = tie); test
  points go `chunk` at a time (the full setting's 5,000 x 20,000 kernel would take 800 MB per copy)."""
  _check_sphere(x_train, x_test)
  kind = taxonomy(dual).kind
  if kind == "majority_vote":
    return jnp.full(x_test.shape[:1], jnp.sign(jnp.sum(y_train)), y_train.dtype)
  if kind not in ("nearest_neighbour", "singular"):
    raise UserError(f"dual '{dual.name}' has no classifier among the three limits (kind '{kind}')")
  out = []
  for start in range(0, x_test.shape[0], chunk):
    xi = x_test[start:start + chunk] @ x_train.T
    if kind == "nearest_neighbour":
      out.append(y_train[jnp.argmax(xi, axis=1)])
    else:
      out.append(jnp.sign(singular_kernel(xi, dual, iterations) @ y_train))
  return jnp.concatenate(out)


# ---------------------------------------------------------------------------------------------------
# A finite wide network, the independent check of the recursion.

def init_mlp(key: jax.Array, in_dim: int, width: int, depth: int) -> list:
  """Standard-normal weights of `depth` hidden layers of `width` units and a scalar readout."""
  shapes = [(in_dim, width)] + [(width, width)] * (depth - 1) + [(width, 1)]
  return [jax.random.normal(k, s) for k, s in zip(jax.random.split(key, len(shapes)), shapes)]


def mlp(params: list, x: jax.Array, phi: ArrayFn) -> jax.Array:
  """NTK parametrisation without biases: h_1 = x W_1, h_(l+1) = phi(h_l) W_(l+1) / sqrt(width)."""
  h = x @ params[0]
  for w in params[1:]:
    h = phi(h) @ w / math.sqrt(w.shape[0])
  return h[:, 0]


def empirical_ntk(params: list, x: jax.Array, phi: ArrayFn) -> jax.Array:
  """J J^T of the network's outputs on `x` with respect to every weight (autodiff)."""
  jac = jax.jacrev(lambda p: mlp(p, x, phi))(params)
  flat = jnp.concatenate([j.reshape(x.shape[0], -1) for j in jac], axis=1)
  return flat @ flat.T
