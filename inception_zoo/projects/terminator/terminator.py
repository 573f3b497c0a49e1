"""Terminator: slow-fast networks joined by the HyperZ.Z.W operator, without residual connections.

Zhang, "HyperZ.Z.W Operator Connects Slow-Fast Networks for Full Context Interaction", arXiv 2401.17948,
2024 (paper 26 of the zoo); the authors' code (hyperevolnet/Terminator) is marked unfinished.

- Slow network: a coordinate-based implicit MLP (SIREN: sin(omega_0 (W c + b)) layers on a grid of
  coordinates in [-1, 1]^d, a linear output with one channel per fast-network channel) that generates a
  hyper-kernel W of a given size: global (the input's size) or local (k, or k x k). Its output layer is
  scaled by 1/sqrt(kernel size) (Chang et al.'s hyper-network initialisation, as the authors' code does)
  so the fast convolutions start at unit gain.
- HyperZ.Z.W: the hidden activations Z make the kernel context-dependent by an elementwise product,
  K = Z * W, and Z is then convolved with K (depthwise, per sample). Global kernels have the input's
  size, so the convolution is computed with FFTs (zero-padded, linear convolution, 'same' output: the
  full context in one layer at O(L log L)); local kernels use a direct depthwise convolution, their
  context Z resized (antialiased linear filter) to the kernel's size.
- SFNE block (multi-branch, no residual): the global HyperZ.Z.W output g, its sigmoid-gated g*sigmoid(g),
  a 1x1 channel mixer of Z and one local HyperZ.Z.W branch per local size, each instance-standardised
  (zero mean, unit variance per sample and channel, no affine), concatenated and compressed by a 1x1
  bottleneck, then batch-standardised (BatchNorm without scale and bias) and a GELU.
Our reading, where paper and code are unclear or differ: the authors' code computes the global branch as
a matrix product over the spatial axes; we follow the paper's convolution. The code's further branches
(recursive gated unit, hyper-channel / hyper-spatial interaction, concatenation of earlier layers'
outputs, group instance-batch standardisation) and the "slow neural loss" (a local feedback error for
the slow networks) are left out: their definitions are not fixed by the paper.
"""
import math
from typing import Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.registry import register_model

EPS = 1e-5


def coordinate_grid(sizes: Sequence[int]) -> jax.Array:
  """(prod(sizes), d) coordinates in [-1, 1], row-major over the kernel's positions."""
  axes = [np.linspace(-1.0, 1.0, s) if s > 1 else np.zeros(1) for s in sizes]
  return jnp.asarray(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(sizes)), jnp.float32)


def _siren_init(fan_in: int, omega_0: float, first: bool):
  bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / omega_0  # Sitzmann et al. 2020, Sec. 3.2
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class SlowNet(nn.Module):
  """SIREN hyper-kernel generator: returns W of shape (*sizes, channels)."""
  channels: int
  sizes: Tuple[int, ...]
  hidden: int = 32
  num_layers: int = 2
  omega_0: float = 10.0

  @nn.compact
  def __call__(self) -> jax.Array:
    h = coordinate_grid(self.sizes)
    for i in range(self.num_layers):
      layer = nn.Dense(self.hidden, kernel_init=_siren_init(h.shape[-1], self.omega_0, i == 0), name=f"siren{i}")
      h = jnp.sin(self.omega_0 * layer(h))
    numel = int(np.prod(self.sizes))
    out = nn.Dense(self.channels, kernel_init=nn.initializers.variance_scaling(1.0 / numel, "fan_in", "uniform"),
                   name="out")(h)
    return out.reshape(*self.sizes, self.channels)


def _spatial_axes(x: jax.Array) -> Tuple[int, ...]:
  return tuple(range(1, x.ndim - 1))


def fft_conv(z: jax.Array, k: jax.Array) -> jax.Array:
  """Depthwise linear convolution of z (N, *S, C) with per-sample kernels k (N or 1, *K, C), K <= S,
  by FFT over zero-padded signals; 'same' output (N, *S, C), centred like scipy.signal.convolve."""
  axes = _spatial_axes(z)
  s, ks = z.shape[1:-1], k.shape[1:-1]
  full = [a + b - 1 for a, b in zip(s, ks)]
  out = jnp.fft.irfftn(jnp.fft.rfftn(z, full, axes) * jnp.fft.rfftn(k, full, axes), full, axes)
  index = (slice(None), *(slice((b - 1) // 2, (b - 1) // 2 + a) for a, b in zip(s, ks)), slice(None))
  return out[index]


def _taps(z: jax.Array, ks: Tuple[int, ...]):
  """(tap, window) per kernel tap j: window[t] = z[t + (K - 1) // 2 - j] (zero outside), so that a
  convolution is sum_j k[j] window_j. Slices of one padded copy: matmuls and products instead of
  lax.conv, whose per-sample and 1D gradients are 10-100x slower on CPU."""
  padded = jnp.pad(z, [(0, 0), *((b // 2, (b - 1) // 2) for b in ks), (0, 0)])
  for tap in np.ndindex(*ks):
    yield tap, padded[(slice(None), *(slice(b - 1 - j, b - 1 - j + n) for b, j, n in zip(ks, tap, z.shape[1:-1])))]


def depthwise_conv(z: jax.Array, k: jax.Array) -> jax.Array:
  """The same convolution as `fft_conv`, directly: for small local kernels."""
  ks = k.shape[1:-1]
  out = jnp.zeros_like(z)
  for tap, window in _taps(z, ks):
    out = out + k[(slice(None), *tap)].reshape(k.shape[0], *(1,) * len(ks), k.shape[-1]) * window
  return out


def hyper_zzw_global(z: jax.Array, w: jax.Array) -> jax.Array:
  """Z convolved with the context-dependent global kernel Z * W (W: (*S, C), the input's size), by FFT."""
  return fft_conv(z, z * w)


def hyper_zzw_local(z: jax.Array, w: jax.Array) -> jax.Array:
  """Z convolved with the context-dependent local kernel resize(Z) * W (W: (*K, C)): the authors' code
  pools Z to the kernel's size the same way (adaptive average pooling)."""
  context = jax.image.resize(z, (z.shape[0], *w.shape[:-1], z.shape[-1]), "linear", antialias=True)
  return depthwise_conv(z, context * w)


def instance_standardise(x: jax.Array) -> jax.Array:
  """Zero mean, unit variance per sample and channel over the spatial axes (no affine)."""
  axes = _spatial_axes(x)
  mean = x.mean(axes, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(x.var(axes, keepdims=True) + EPS)


class SFNEBlock(nn.Module):
  """Slow-fast neural encoding block: multi-branch HyperZ.Z.W, 1x1 bottleneck, batch standardisation.
  Returns the block output and its standardised pre-activation (the features whose statistics stay
  near zero mean and unit variance without residual connections)."""
  features: int
  local_sizes: Tuple[int, ...] = (3, 5)
  slow_hidden: int = 32
  omega_0: float = 10.0
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    d, c = z.ndim - 2, z.shape[-1]
    slow = lambda sizes, name: SlowNet(c, tuple(sizes), self.slow_hidden, omega_0=self.omega_0, name=name)()
    g = hyper_zzw_global(z, slow(z.shape[1:-1], "slow_global"))
    branches = [g, g * nn.sigmoid(g), nn.Dense(c, name="mixer")(z)]
    for k in self.local_sizes:
      branches.append(hyper_zzw_local(z, slow((k,) * d, f"slow_local{k}")))
    h = jnp.concatenate([instance_standardise(b) for b in branches], -1)
    h = nn.Dense(self.features, name="bottleneck")(h)
    h = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, use_scale=False, use_bias=False,
                     name="bstd")(h)
    return nn.gelu(h), h


class Terminator(nn.Module):
  """1x1 stem, `depth` SFNE blocks (no residuals), global average pool, linear head. Input (N, L, C)
  for sequences or (N, H, W, C) for images; returns (logits, {"block{i}": standardised features})."""
  num_classes: int = 10
  width: int = 16
  depth: int = 2
  local_sizes: Tuple[int, ...] = (3, 5)
  slow_hidden: int = 32
  omega_0: float = 10.0
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    if x.ndim not in (3, 4):
      raise UserError(f"Terminator expects sequences (N, L, C) or images (N, H, W, C); got {x.shape}")
    if max(self.local_sizes, default=0) > min(x.shape[1:-1]):
      raise UserError(f"local kernel sizes {self.local_sizes} exceed the input's size {x.shape[1:-1]}")
    z = nn.Dense(self.width, name="stem")(x)
    features = {}
    for i in range(self.depth):
      z, features[f"block{i}"] = SFNEBlock(self.width, tuple(self.local_sizes), self.slow_hidden, self.omega_0,
                                           self.bn_momentum, name=f"block{i}")(z, train=train)
    return nn.Dense(self.num_classes, name="head")(z.mean(_spatial_axes(z))), features


class PlainCNN(nn.Module):
  """The same-size baseline: `depth` plain convolutions (kernel 3, ReLU, no normalisation, no residual),
  global average pool, linear head; returns the pre-activations as features like `Terminator`."""
  num_classes: int = 10
  width: int = 32
  depth: int = 2

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    del train
    features = {}
    for i in range(self.depth):
      # A kernel-3 'SAME' convolution as one matmul over the stacked taps (same parameters as nn.Conv).
      windows = [w for _, w in _taps(x, (3,) * (x.ndim - 2))]
      features[f"block{i}"] = nn.Dense(self.width, name=f"conv{i}")(jnp.concatenate(windows, -1))
      x = nn.relu(features[f"block{i}"])
    return nn.Dense(self.num_classes, name="head")(x.mean(_spatial_axes(x))), features


@register_model(tags=("sequence",))
def terminator(**kwargs) -> Terminator:
  return Terminator(**kwargs)


@register_model(tags=("sequence",))
def terminator_plain_cnn(**kwargs) -> PlainCNN:
  """The same-size CNN baseline of the Terminator experiment."""
  return PlainCNN(**kwargs)
