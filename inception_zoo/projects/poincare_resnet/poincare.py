"""The Poincare ball and the layers of a Poincare ResNet.

van Spengler, Berkhout, Mettes. "Poincare ResNet", ICCV 2023 (arXiv:2303.14027), with the layers it
builds on: Ganea, Becigneul, Hofmann, "Hyperbolic Neural Networks", NeurIPS 2018 (Mobius addition,
exp/log maps) and Shimizu, Mukuta, Harada, "Hyperbolic Neural Networks++", ICLR 2021 (Poincare fully
connected layer, beta-concatenation, Poincare convolution).

The ball of curvature -c (c > 0, a Python float: the paper keeps it fixed, c = 0.1) is
{x : c |x|^2 < 1}. Points are arrays whose last axis is the ball's dimension.

- Mobius addition, exp/log maps at 0 and at any point, distance, gyration, parallel transport,
  Mobius scalar multiplication, projection to the ball (a margin of 4e-3 / sqrt(c) in float32, 1e-5
  in float64, as the authors' code), the gyromidpoint.
- `poincare_fc`: HNN++'s fully connected layer: signed distances v_k(x) to the hyperplanes
  (z_k, r_k), w = sinh(sqrt(c) v) / sqrt(c), y = w / (1 + sqrt(1 + c |w|^2)).
- `mobius_add`, `expmap0`, `logmap0` and `poincare_fc` carry a `jax.custom_vjp` backward written out
  by hand (the paper's third roadblock: autodiff records every intermediate of these long formulas;
  a closed-form backward keeps one residual set per op). The derivatives are ours and are checked
  against autodiff and against geoopt's torch autograd in tests/papers/test_poincare.py.
- `PoincareLinear`, `PoincareConv2d` (the receptive field's per-pixel tangent vectors at 0 scaled by
  beta-concatenation, mapped to the ball, then one Poincare FC), `PoincareBatchNorm` (midpoint batch
  norm: gyromidpoint centre instead of the Frechet mean, transport to the origin, dispersion
  rescaled to the learned variance, moved to the learned mean).
- Identity initialisation (the paper's first roadblock): Z = I / 2 with zero biases makes the Poincare
  FC the identity map exactly (v_k = asinh(sqrt(c) lambda_x x_k) / sqrt(c), so w = lambda_x x and
  y = x); HNN++'s standard init N(0, (2 n m)^-1/2) shrinks every layer's output toward the origin.

Our reading, where the paper leaves it open (we follow the authors' code, maxvanspengler/poincare-resnet):
the convolution's identity init is I / 2 on the unfolded receptive field in channel-major order (torch
`Unfold`'s, also jax's `conv_general_dilated_patches`'); batch norm's learned mean is a tangent vector
at 0 and its learned variance one scalar; its running statistics (the authors' code evaluates with
batch statistics) are a geodesic moving average of the batch midpoints (Lou et al., "Differentiating
through the Frechet Mean", ICML 2020) and a moving average of the batch variances; batch norm
transports through the origin (see `PoincareBatchNorm`).
"""
import functools
import math
from typing import Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError

# Smallest norm a division sees (the authors' clamp): directions of zero vectors stay finite.
MIN_NORM = 1e-15


def check_curvature(c) -> float:
  if not isinstance(c, (int, float)) or not c > 0:
    raise UserError(f"Poincare ball curvature c must be a positive Python number (the ball has "
                    f"curvature -c); got {c!r}")
  return float(c)


def _sqnorm(x):
  return jnp.sum(x * x, axis=-1, keepdims=True)


def _norm(x):
  return jnp.sqrt(jnp.maximum(_sqnorm(x), MIN_NORM ** 2))


def _dot(x, y):
  return jnp.sum(x * y, axis=-1, keepdims=True)


def _unbroadcast(g, shape):
  """Sums a gradient over the axes its input was broadcast along."""
  g = jnp.sum(g, axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
  return jnp.sum(g, axis=tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1),
                 keepdims=True).reshape(shape)


def project(x, c: float):
  """Pulls points within a margin of the boundary back inside (the authors' margins)."""
  eps = 4e-3 if x.dtype == jnp.float32 else 1e-5
  max_norm = (1 - eps) / math.sqrt(c)
  n = _norm(x)
  return jnp.where(n > max_norm, x / n * max_norm, x)


def lambda_x(x, c: float):
  """The conformal factor 2 / (1 - c |x|^2), keeping the last axis (size 1)."""
  return 2 / (1 - c * _sqnorm(x))


def _atanh_ball(u):
  # sqrt(c) |x| < 1 inside the ball; the clip only guards rounding at the projection margin.
  return jnp.arctanh(jnp.minimum(u, 1 - 1e-7))


# --- Mobius addition ----------------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def mobius_add(x, y, c: float):
  """x (+) y = ((1 + 2c<x,y> + c|y|^2) x + (1 - c|x|^2) y) / (1 + 2c<x,y> + c^2 |x|^2 |y|^2)."""
  return _mobius_add_fwd(x, y, c)[0]


def _mobius_add_fwd(x, y, c):
  x2, y2, xy = _sqnorm(x), _sqnorm(y), _dot(x, y)
  a, b = 1 + 2 * c * xy + c * y2, 1 - c * x2
  den = jnp.maximum(1 + 2 * c * xy + c * c * x2 * y2, MIN_NORM)
  out = (a * x + b * y) / den
  return out, (x, y, x2, y2, a, b, den, out)


def _mobius_add_bwd(c, res, g):
  x, y, x2, y2, a, b, den, out = res
  g_num = g / den
  g_den = -_dot(g, out) / den
  gx_dot, gy_dot = _dot(g_num, x), _dot(g_num, y)
  # numerator a x + b y with da/dx = 2c y, da/dy = 2c (x + y), db/dx = -2c x; denominator
  # d/dx = 2c y + 2c^2 |y|^2 x, d/dy = 2c x + 2c^2 |x|^2 y.
  gx = a * g_num + 2 * c * gx_dot * y - 2 * c * gy_dot * x + g_den * (2 * c * y + 2 * c * c * y2 * x)
  gy = b * g_num + 2 * c * gx_dot * (x + y) + g_den * (2 * c * x + 2 * c * c * x2 * y)
  return _unbroadcast(gx, x.shape), _unbroadcast(gy, y.shape)


mobius_add.defvjp(_mobius_add_fwd, _mobius_add_bwd)


# --- exp / log at the origin --------------------------------------------------------------------

@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _expmap0(v, c: float):
  return _expmap0_fwd(v, c)[0]


def _expmap0_fwd(v, c):
  s = math.sqrt(c)
  n = _norm(v)
  t = jnp.tanh(s * n)
  f = t / (s * n)
  return f * v, (v, n, t, f)


def _expmap0_bwd(c, res, g):
  v, n, t, f = res
  # d/dv [f(|v|) v] = f I + f'(n) v v^T / n, f'(n) = ((1 - t^2) - f) / n; written over n^2 so that
  # a zero vector (n clamped) gives 0 * finite, not 0 * inf.
  return (f * g + ((1 - t * t) - f) / (n * n) * _dot(g, v) * v,)


_expmap0.defvjp(_expmap0_fwd, _expmap0_bwd)


def expmap0(v, c: float):
  """exp_0(v) = tanh(sqrt(c) |v|) v / (sqrt(c) |v|), projected into the ball."""
  return project(_expmap0(v, c), c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def logmap0(y, c: float):
  """log_0(y) = artanh(sqrt(c) |y|) y / (sqrt(c) |y|)."""
  return _logmap0_fwd(y, c)[0]


def _logmap0_fwd(y, c):
  s = math.sqrt(c)
  n = _norm(y)
  h = _atanh_ball(s * n) / (s * n)
  return h * y, (y, n, h)


def _logmap0_bwd(c, res, g):
  y, n, h = res
  # h'(n) = (1 / (1 - c n^2) - h) / n.
  return (h * g + (1 / (1 - c * n * n) - h) / (n * n) * _dot(g, y) * y,)


logmap0.defvjp(_logmap0_fwd, _logmap0_bwd)


# --- maps at any point, distance, transport, midpoint ---------------------------------------------

def expmap(x, v, c: float):
  """exp_x(v) = x (+) tanh(sqrt(c) lambda_x |v| / 2) v / (sqrt(c) |v|)."""
  s, n = math.sqrt(c), _norm(v)
  return project(mobius_add(x, jnp.tanh(s * lambda_x(x, c) * n / 2) * v / (s * n), c), c)


def logmap(x, y, c: float):
  """log_x(y) = 2 / (sqrt(c) lambda_x) artanh(sqrt(c) |u|) u / |u|, u = (-x) (+) y."""
  s = math.sqrt(c)
  u = mobius_add(-x, y, c)
  n = _norm(u)
  return 2 / (s * lambda_x(x, c)) * _atanh_ball(s * n) * u / n


def dist(x, y, c: float):
  """Geodesic distance 2 / sqrt(c) artanh(sqrt(c) |(-x) (+) y|), without the last axis."""
  s = math.sqrt(c)
  return 2 / s * _atanh_ball(s * _norm(mobius_add(-x, y, c)))[..., 0]


def gyration(u, v, w, c: float):
  """gyr[u, v] w = -(u (+) v) (+) (u (+) (v (+) w))."""
  return mobius_add(-mobius_add(u, v, c), mobius_add(u, mobius_add(v, w, c), c), c)


def transp(x, y, v, c: float):
  """Parallel transport of the tangent vector v at x to y: gyr[y, -x] v * lambda_x / lambda_y."""
  return gyration(y, -x, v, c) * lambda_x(x, c) / lambda_x(y, c)


def mobius_scalar_mul(r, x, c: float):
  """r (x) x = tanh(r artanh(sqrt(c) |x|)) x / (sqrt(c) |x|)."""
  s, n = math.sqrt(c), _norm(x)
  return jnp.tanh(r * _atanh_ball(s * n)) * x / (s * n)


def midpoint(x, c: float, axis: Union[int, Tuple[int, ...]] = 0, weights=None):
  """Ungar's gyromidpoint over `axis` (not the last): 1/2 (x) (sum w lambda x / sum w (lambda - 1)).

  The paper's batch-norm centre: one closed form where the Frechet mean needs an iterative solver."""
  lam = lambda_x(x, c)
  w = jnp.ones_like(lam) if weights is None else weights[..., None]
  m = jnp.sum(w * lam * x, axis=axis) / jnp.sum(w * (lam - 1), axis=axis)
  return mobius_scalar_mul(0.5, m, c)


def frechet_variance(x, mu, c: float, axis: Union[int, Tuple[int, ...]] = 0):
  """Mean squared distance of the points x to mu over `axis`."""
  return jnp.mean(dist(x, mu, c) ** 2, axis=axis)


def beta_scale(n: int, n_part: int) -> float:
  """B(n / 2, 1 / 2) / B(n_part / 2, 1 / 2): HNN++'s factor for a part of dimension n_part of an
  n-dimensional concatenation, so that tangent vectors keep their expected norm."""
  def log_beta(a):
    return math.lgamma(a) + math.lgamma(0.5) - math.lgamma(a + 0.5)
  return math.exp(log_beta(n / 2) - log_beta(n_part / 2))


def beta_concat(xs: Sequence[jax.Array], c: float):
  """HNN++'s beta-concatenation of points: each logged to 0, scaled by `beta_scale`, concatenated,
  mapped back to the ball."""
  n = sum(x.shape[-1] for x in xs)
  return expmap0(jnp.concatenate([logmap0(x, c) * beta_scale(n, x.shape[-1]) for x in xs], -1), c)


# --- the Poincare fully connected layer -----------------------------------------------------------

def _fc_parts(x, z, r, c):
  s = math.sqrt(c)
  lam = lambda_x(x, c)
  zn = jnp.sqrt(jnp.maximum(jnp.sum(z * z, axis=0), MIN_NORM ** 2))
  p = x @ z
  ch, sh = jnp.cosh(2 * s * r), jnp.sinh(2 * s * r)
  a = s * lam * p / zn * ch - (lam - 1) * sh
  v = 2 * zn / s * jnp.arcsinh(a)
  return lam, zn, p, ch, sh, a, v


def hyperplane_distances(x, z, r, c: float):
  """HNN++'s v_k(x): 2 |z_k| times the signed distance of x to the hyperplane through
  exp_0(r_k z_k / |z_k|) orthogonal to z_k transported there. x (..., n), z (n, m), r (m,)."""
  return _fc_parts(x, z, r, c)[-1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def poincare_fc(x, z, r, c: float):
  """HNN++'s Poincare FC: w = sinh(sqrt(c) v(x)) / sqrt(c), y = w / (1 + sqrt(1 + c |w|^2))."""
  return _poincare_fc_fwd(x, z, r, c)[0]


def _poincare_fc_fwd(x, z, r, c):
  s = math.sqrt(c)
  lam, zn, p, ch, sh, a, v = _fc_parts(x, z, r, c)
  w = jnp.sinh(s * v) / s
  q = jnp.sqrt(1 + c * _sqnorm(w))
  return w / (1 + q), (x, z, lam, zn, p, ch, sh, a, v, w, q)


def _poincare_fc_bwd(c, res, g):
  x, z, lam, zn, p, ch, sh, a, v, w, q = res
  s = math.sqrt(c)
  g_w = g / (1 + q) - _dot(g, w) / (1 + q) ** 2 * c * w / q
  g_v = g_w * jnp.cosh(s * v)
  g_a = g_v * 2 * zn / (s * jnp.sqrt(1 + a * a))
  g_p = g_a * s * lam * ch / zn
  g_lam = jnp.sum(g_a * (s * p * ch / zn - sh), axis=-1, keepdims=True)
  batch = tuple(range(x.ndim - 1))
  g_zn = jnp.sum(g_v * 2 * jnp.arcsinh(a) / s - g_a * s * lam * p * ch / zn ** 2, axis=batch)
  g_r = jnp.sum(g_a * 2 * s * (s * lam * p / zn * sh - (lam - 1) * ch), axis=batch)
  # d lambda_x / dx = c lambda_x^2 x; d|z_k| / dz_k = z_k / |z_k|.
  g_x = g_p @ z.T + g_lam * c * lam * lam * x
  g_z = x.reshape(-1, x.shape[-1]).T @ g_p.reshape(-1, g_p.shape[-1]) + z * (g_zn / zn)
  return g_x, g_z, g_r


poincare_fc.defvjp(_poincare_fc_fwd, _poincare_fc_bwd)


# --- layers ---------------------------------------------------------------------------------------

def identity_init(key, shape, dtype=jnp.float32):
  """The paper's identity-based init: Z = I / 2 (the 2 cancels the 2 |z_k| of v_k)."""
  del key
  return 0.5 * jnp.eye(*shape, dtype=dtype)


def hnn_init(key, shape, dtype=jnp.float32):
  """HNN++'s init, N(0, (2 n m)^-1/2) for an n -> m layer: the one that collapses toward 0."""
  return jax.random.normal(key, shape, dtype) * (2 * shape[0] * shape[1]) ** -0.5


def tangent_relu(x, c: float):
  """ReLU on the tangent space at 0 (the authors' activation): exp_0(relu(log_0(x)))."""
  return expmap0(nn.relu(logmap0(x, c)), c)


class PoincareLinear(nn.Module):
  """Poincare FC layer from points (..., n) to points (..., features) of the ball."""
  features: int
  c: float = 0.1
  use_bias: bool = True
  id_init: bool = True

  @nn.compact
  def __call__(self, x):
    c = check_curvature(self.c)
    z = self.param("kernel", identity_init if self.id_init else hnn_init, (x.shape[-1], self.features))
    r = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else \
        jnp.zeros((self.features,), x.dtype)
    return project(poincare_fc(x, z, r, c), c)


class PoincareConv2d(nn.Module):
  """Poincare 2D convolution of NHWC points (each pixel's channels a point of the ball): the
  receptive field's K = k * k pixels are beta-concatenated (their tangent vectors at 0 scaled by
  B(KC/2, 1/2) / B(C/2, 1/2), zero padding = the origin) and one Poincare FC maps the K*C vector to
  `features` channels."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: int = 1
  c: float = 0.1
  use_bias: bool = True
  id_init: bool = True

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4:
      raise UserError(f"PoincareConv2d needs NHWC points; got shape {x.shape}")
    c, k, channels = check_curvature(self.c), self.kernel_size, x.shape[-1]
    t = logmap0(x, c) * beta_scale(k * k * channels, channels)
    pad = ((self.padding, self.padding),) * 2
    patches = jax.lax.conv_general_dilated_patches(t, (k, k), (self.strides,) * 2, pad,
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return PoincareLinear(self.features, c, self.use_bias, self.id_init, name="fc")(expmap0(patches, c))


class PoincareBatchNorm(nn.Module):
  """Poincare midpoint batch norm over every axis but the last: centre mu = gyromidpoint of the batch,
  every point moved to the origin by the left gyrotranslation (-mu) (+) x, its distance to the origin
  rescaled by sqrt(var / (batch Frechet variance + eps)), and moved to the learned mean
  nu = exp_0(mean): y = nu (+) (s (x) ((-mu) (+) x)).

  That is exp_nu(s P_{0->nu} P_{mu->0} log_mu(x)), transport through the origin (P_{mu->0} log_mu(x)
  = log_0((-mu) (+) x) and exp_nu(P_{0->nu} w) = nu (+) exp_0(w)); the authors' code transports
  mu -> nu directly, which differs by a gyration and is the same map while nu = 0 (at init). Two Mobius
  additions instead of a gyration's four keep the graph small."""
  c: float = 0.1
  momentum: float = 0.1
  eps: float = 1e-6  # the authors'
  use_midpoint: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    c, shape = check_curvature(self.c), x.shape
    flat = x.reshape(-1, shape[-1])
    mean = expmap0(self.param("mean", nn.initializers.zeros, (shape[-1],)), c)
    var = self.param("var", nn.initializers.ones, ())
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (shape[-1],), x.dtype)
    running_var = self.variable("batch_stats", "var", jnp.ones, (), x.dtype)
    centre = (midpoint(flat, c) if self.use_midpoint else frechet_mean(flat, c)) if train else \
        running_mean.value
    u = mobius_add(-centre, flat, c)
    if train:
      spread = jnp.mean((2 / math.sqrt(c) * _atanh_ball(math.sqrt(c) * _norm(u))) ** 2)
      if not self.is_initializing():
        # A geodesic step old (+) (m (x) ((-old) (+) centre)) toward the batch's (Lou et al.).
        old, new = running_mean.value, jax.lax.stop_gradient(centre)
        running_mean.value = mobius_add(old, mobius_scalar_mul(self.momentum, mobius_add(-old, new, c), c), c)
        running_var.value = (1 - self.momentum) * running_var.value + self.momentum * \
            jax.lax.stop_gradient(spread)
    else:
      spread = running_var.value
    y = mobius_add(mean, mobius_scalar_mul(jnp.sqrt(var / (spread + self.eps)), u, c), c)
    return project(y, c).reshape(shape)


def frechet_mean(x, c: float, axis: int = 0, steps: int = 20):
  """The Frechet mean (the baseline midpoint batch norm replaces): `steps` iterations of the Karcher
  flow mu <- exp_mu(mean log_mu(x)) from the gyromidpoint; a fixed point is the mean, which is unique
  on the ball (negative curvature)."""
  def step(mu, _):
    return expmap(mu, jnp.mean(logmap(mu, x, c), axis=axis), c), None
  return jax.lax.scan(step, midpoint(x, c, axis), None, length=steps)[0]
