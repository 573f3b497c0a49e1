"""Scalable neural network kernels (Sehanobish, Choromanski, Zhao, Dubey and Likhosherstov, "Scalable
Neural Network Kernels", ICLR 2024), paper 8 of the zoo.

An SNNK replaces a feedforward layer f(W x + b) by a dot product <Phi(x), Psi(W, b)>: the input and the
parameters go through separate random-feature maps that share one random Gaussian matrix G (m x d), and
only meet in the final product. Two families of maps:

* ReLU-SNNK: Phi(x) = m^-1/2 ReLU(G x), Psi(w) = m^-1/2 ReLU(G w). Their dot product is an unbiased
  estimate of the first-order arc-cosine kernel ||x|| ||w|| (sin t + (pi - t) cos t) / (2 pi), t the angle
  between x and w (Cho & Saul 2009); the layer computes that kernel, not ReLU(w.x).
* Universal random features (URFs), which estimate f(w.x + b) itself for an activation written as a
  mixture of exponentials, f(z) = E_xi[c(xi) exp(a(xi) z)] (a Fourier expansion has a = 2 pi i xi). With
  g ~ N(0, I), E_g[exp(a g.x - a^2 |x|^2 / 2) exp(g.w - |w|^2 / 2)] = exp(a x.w) for any complex a, so
      Phi(x)_j = m^-1/2 c_j exp(a_j g_j.x - a_j^2 |x|^2 / 2),
      Psi(w, b)_j = m^-1/2 exp(a_j b + g_j.w - |w|^2 / 2),
  with one (xi_j, g_j) per feature, and Re <Phi(x), Psi(w, b)> -> f(w.x + b). This follows the official
  code's `input_to_rfs_torch_vectorized` (features A(xi) exp(a(xi) g.x - a(xi)^2 |x|^2 / 2) for the input,
  B = 1, b(xi) = 1 for the weights), with the bias factor exp(2 pi i xi b) on the weight side as in its
  `create_asym_feats`. Our reading: the activations tabled here (`exp`, `cos`, `sin`) are exact
  one- or two-point mixtures; a continuous xi (e.g. a Gaussian activation, xi ~ N(0, 1)) has
  exp(xi^2 |x|^2 / 2) weights whose variance is infinite unless |x| is small, so it is left out, as is
  the paper's variance-reduction parameter M of its asymmetric features. The URF variance grows like
  exp(|x|^2) for oscillating f: inputs of norm about 1 or less (the official code divides by d^(1/4)). The
  complex features are returned as real ones, [Re u, Im u] for the
  input and [Re v, -Im v] for the weights, so that a real dot product gives Re <u, v>.

In the layer the weight features Psi(W, b) are the trainable parameters (initialised as the features of
an ordinary initial W, or of a pretrained one), and G is fixed by a seed. The SNNK adapter (the official
`CustomReluAdapter` with down_sample=None) is x + (Phi(x) Psi) * s: a ReLU-SNNK layer from d to d whose
Psi (m x d) and modulating vector s (d, zero-initialised: the adapter starts as the identity) are its
only parameters, m d + d against a bottleneck adapter's 2 d r + r + d.

Fully bundled network (the paper's neural network bundling): when every layer of a network is linear in its
input's random
features, the whole network is y = Phi(x) Psi for one parameter matrix Psi; for the mean squared error
the optimal Psi has an explicit formula, the (ridge) least-squares solution on the feature matrix, so it
is fitted without backpropagation (`bundled_fit`). Our reading: the bundled network's parameters are
taken directly as Psi (the paper's bundling composes per-layer Psi's into it).
"""
import functools
from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError

# f(z) = E[c exp(a z)] per activation: draws (a, c) of shape (m,), complex.
_MIXTURES = {
    "exp": lambda key, m: (jnp.ones((m,)), jnp.ones((m,))),
    "cos": lambda key, m: (1j * _signs(key, m), jnp.ones((m,))),
    # sin z = (e^{iz} - e^{-iz}) / (2i): sign s with probability 1/2, coefficient s / i (same key, same s).
    "sin": lambda key, m: (1j * _signs(key, m), -1j * _signs(key, m)),
}
KINDS = ("relu",) + tuple(_MIXTURES)


def _signs(key, m):
  return jnp.where(jax.random.bernoulli(key, 0.5, (m,)), 1.0, -1.0)


def orthogonal_gaussian(key, m: int, d: int) -> jax.Array:
  """m x d Gaussian rows made orthogonal in blocks of d (QR), each row rescaled to the norm of an
  independent Gaussian vector, so rows keep the N(0, I) marginal (Performer's orthogonal features)."""
  kq, kn = jax.random.split(key)
  blocks = -(-m // d)
  q, r = jnp.linalg.qr(jax.random.normal(kq, (blocks, d, d)))
  # Signs of R's diagonal on Q's columns make Q Haar-distributed (plain QR is biased).
  q = q * jnp.sign(jnp.diagonal(r, axis1=1, axis2=2))[:, None, :]
  rows = jnp.swapaxes(q, 1, 2).reshape(blocks * d, d)[:m]
  return rows * jnp.linalg.norm(jax.random.normal(kn, (m, d)), axis=-1, keepdims=True)


@flax.struct.dataclass
class RandomFeatures:
  """One draw shared by Phi and Psi: the projection G (m x d) and, for URFs, the mixture's (a, c)."""
  g: jax.Array
  a: jax.Array
  c: jax.Array
  kind: str = flax.struct.field(pytree_node=False)

  @property
  def num_features(self) -> int:
    """Width of the real feature vectors: m for ReLU, 2m for URFs (real and imaginary parts)."""
    return self.g.shape[0] * (1 if self.kind == "relu" else 2)


def draw(key, kind: str, num_random_features: int, dim: int, *, orthogonal: bool = False
         ) -> RandomFeatures:
  if kind not in KINDS:
    raise UserError(f"unknown SNNK kind '{kind}' ({', '.join(KINDS)})")
  if num_random_features < 1 or dim < 1:
    raise UserError(f"SNNK needs num_random_features >= 1 and dim >= 1, got {num_random_features}, {dim}")
  return _draw(key, kind, num_random_features, dim, orthogonal)


# Compiled once per shape: a layer draws eagerly at trace time, where each op would otherwise compile alone.
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _draw(key, kind: str, m: int, dim: int, orthogonal: bool) -> RandomFeatures:
  kg, km = jax.random.split(key)
  g = orthogonal_gaussian(kg, m, dim) if orthogonal else jax.random.normal(kg, (m, dim))
  a, c = _MIXTURES[kind](km, m) if kind != "relu" else (jnp.zeros((m,)), jnp.zeros((m,)))
  return RandomFeatures(g, a.astype(jnp.complex64), c.astype(jnp.complex64), kind)


def _check_dim(rf: RandomFeatures, v):
  if v.shape[-1] != rf.g.shape[1]:
    raise UserError(f"SNNK features were drawn for dimension {rf.g.shape[1]}, got inputs of shape {v.shape}")


def input_features(rf: RandomFeatures, x: jax.Array) -> jax.Array:
  """Phi(x): (..., d) -> (..., rf.num_features)."""
  _check_dim(rf, x)
  m = rf.g.shape[0]
  proj = x @ rf.g.T
  if rf.kind == "relu":
    return jax.nn.relu(proj) / np.sqrt(m)
  sq = jnp.sum(x * x, axis=-1, keepdims=True)
  u = rf.c * jnp.exp(rf.a * proj - rf.a ** 2 * sq / 2) / np.sqrt(m)
  return jnp.concatenate([u.real, u.imag], axis=-1)


def weight_features(rf: RandomFeatures, kernel: jax.Array, bias: Optional[jax.Array] = None) -> jax.Array:
  """Psi(W, b) for a Flax kernel W (d, n) and bias b (n,): (rf.num_features, n), so that
  input_features(x) @ weight_features(W, b) estimates the layer's n outputs. ReLU-SNNK takes no bias."""
  w = kernel.T
  _check_dim(rf, w)
  m = rf.g.shape[0]
  proj = w @ rf.g.T  # (n, m)
  if rf.kind == "relu":
    if bias is not None:
      raise UserError("ReLU-SNNK has no bias term (fold it into the input as a constant coordinate)")
    return (jax.nn.relu(proj) / np.sqrt(m)).T
  b = jnp.zeros((w.shape[0],)) if bias is None else bias
  sq = jnp.sum(w * w, axis=-1, keepdims=True)
  v = jnp.exp(rf.a * b[:, None] + proj - sq / 2) / np.sqrt(m)
  return jnp.concatenate([v.real, -v.imag], axis=-1).T


def arccos_kernel(x: jax.Array, w: jax.Array) -> jax.Array:
  """E_g[ReLU(g.x) ReLU(g.w)] in closed form: |x| |w| (sin t + (pi - t) cos t) / (2 pi), row-wise."""
  nx, nw = jnp.linalg.norm(x, axis=-1), jnp.linalg.norm(w, axis=-1)
  cos = jnp.clip(jnp.sum(x * w, axis=-1) / (nx * nw), -1.0, 1.0)
  t = jnp.arccos(cos)
  return nx * nw * (jnp.sin(t) + (np.pi - t) * cos) / (2 * np.pi)


def activation(kind: str):
  """The f whose f(w.x + b) a URF of this kind estimates (the arc-cosine kernel for ReLU has no f)."""
  return {"exp": jnp.exp, "cos": jnp.cos, "sin": jnp.sin}[kind]


class SNNKDense(nn.Module):
  """<Phi(x), Psi(W, b)> in place of f(W x + b), with Psi the trainable parameter `psi`
  (num_features x features), initialised as the features of W ~ `kernel_init` (and b = 0)."""
  features: int
  num_random_features: int = 64
  kind: str = "relu"
  orthogonal: bool = False
  seed: int = 0  # G is a constant of the layer, not a parameter: the same seed gives the same layer
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  def random_features(self, dim: int) -> RandomFeatures:
    # Drawn eagerly, so a jitted step sees G as a constant instead of redoing the draw (and QR) per step.
    with jax.ensure_compile_time_eval():
      return draw(jax.random.key(self.seed), self.kind, self.num_random_features, dim, orthogonal=self.orthogonal)

  @nn.compact
  def __call__(self, x):
    rf = self.random_features(x.shape[-1])
    psi = self.param("psi", lambda key: weight_features(rf, self.kernel_init(key, (x.shape[-1], self.features))))
    return input_features(rf, x) @ psi


class SNNKAdapter(nn.Module):
  """x + (Phi(x) Psi) * s: ReLU-SNNK from d to d, Psi from W ~ N(0, 0.02^2) (BERT's init, the official
  adapter's `init_weights='bert'`), s zero-initialised; m d + d trainable parameters."""
  num_random_features: int = 8
  kind: str = "relu"
  orthogonal: bool = True  # the official GLUE run draws orthogonal features
  seed: int = 0

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    h = SNNKDense(d, self.num_random_features, self.kind, self.orthogonal, self.seed,
                  nn.initializers.normal(0.02), name="snnk")(x)
    return x + h * self.param("scale", nn.initializers.zeros, (d,))


class BottleneckAdapter(nn.Module):
  """The standard adapter (Houlsby et al. 2019): x + up(ReLU(down(x))), `up` zero-initialised;
  2 d r + r + d trainable parameters."""
  bottleneck: int = 16

  @nn.compact
  def __call__(self, x):
    h = jax.nn.relu(nn.Dense(self.bottleneck, name="down")(x))
    return x + nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros, name="up")(h)


def snnk_adapter_num_params(dim: int, num_random_features: int, kind: str = "relu") -> int:
  return (1 if kind == "relu" else 2) * num_random_features * dim + dim


def bottleneck_adapter_num_params(dim: int, bottleneck: int) -> int:
  return 2 * dim * bottleneck + bottleneck + dim


def bundled_fit(features: jax.Array, targets: jax.Array, ridge: float = 0.0) -> jax.Array:
  """The fully bundled network's MSE-optimal parameters: argmin_Psi |Phi Psi - Y|^2 + ridge |Psi|^2 =
  (Phi^T Phi + ridge I)^-1 Phi^T Y (minimum-norm least squares when ridge = 0); no backpropagation."""
  if features.ndim != 2 or targets.shape[0] != features.shape[0]:
    raise UserError(f"bundled_fit needs features (n, F) and targets (n, ...), got {features.shape}, "
                    f"{targets.shape}")
  if ridge < 0:
    raise UserError(f"ridge must be >= 0, got {ridge}")
  if ridge == 0:
    return jnp.linalg.lstsq(features, targets)[0]
  gram = features.T @ features + ridge * jnp.eye(features.shape[1], dtype=features.dtype)
  return jnp.linalg.solve(gram, features.T @ targets)
