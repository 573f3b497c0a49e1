"""Building blocks shared by the model families: convolutions with BN, pooling, stochastic depth,
classifier heads, initialisers and small tensor helpers.

Submodule names follow timm's module tree (`conv`, `bn`, list members `layers_<i>`), so that
`inception_zoo.convert` maps a timm state dict onto Flax parameters by a rule instead of a table.
"""
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError

IntPair = Union[int, Tuple[int, int]]

# He-normal suits ReLU networks trained from scratch (TF-slim's Inception used a similar scaled init).
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
# timm's (and the official ViT-style codes') init of Linear / 1x1 / embedding weights: a truncated
# normal of std 0.02, biases at 0.
dense_init = nn.initializers.truncated_normal(0.02)


def scaled(width: float):
  """Channel count at a width multiplier (1.0 is the paper's network): c -> max(1, round(c * width))."""
  return lambda c: max(1, int(round(c * width)))


def concat(xs):
  return jnp.concatenate(xs, axis=-1)


def l2_normalize(x, eps: float = 1e-12):
  """x / max(||x||, eps) along the last axis: PyTorch's F.normalize, so references match."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def pixel_shuffle(x, r: int):
  """(B, h, w, r*r*C) -> (B, h*r, w*r, C) in PyTorch's PixelShuffle channel order (C, r, r)."""
  b, h, w, d = x.shape
  c = d // (r * r)
  x = x.reshape(b, h, w, c, r, r).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, h * r, w * r, c)


def pairwise_distance(x, w, eps: float = 1e-8):
  """Euclidean distances (N, K) between rows of x (N, D) and w (K, D); a safe gradient at zero (the
  squared distance is clipped at `eps` before the square root)."""
  sq = jnp.sum(x * x, -1, keepdims=True) - 2 * x @ w.T + jnp.sum(w * w, -1)
  return jnp.sqrt(jnp.maximum(sq, eps))


def classifier_head(x, *, num_classes: int, drop_rate: float, name: str, train: bool):
  """Global average pooling, dropout, linear layer (called inside a compact method).

  Returns `(logits, pre_logits)`; with `num_classes=0` the logits are the pooled features.
  """
  pre_logits = jnp.mean(x, axis=(1, 2))
  if num_classes == 0:
    return pre_logits, pre_logits
  x = nn.Dropout(drop_rate, deterministic=not train)(pre_logits)
  return nn.Dense(num_classes, dtype=x.dtype, name=name)(x), pre_logits


def _pair(v: IntPair) -> Tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def torch_padding(padding: IntPair) -> Sequence[Tuple[int, int]]:
  """PyTorch's symmetric `padding=(ph, pw)` as Flax explicit padding."""
  ph, pw = _pair(padding)
  return ((ph, ph), (pw, pw))


class ConvBN(nn.Module):
  """Convolution without bias, BatchNorm, ReLU: the Inception papers' basic unit.

  `padding` counts pixels per side as in the papers' code; 0 is the figures' "V" (valid).
  """
  features: int
  kernel_size: IntPair
  strides: IntPair = 1
  padding: IntPair = 0
  bn_momentum: float = 0.9
  bn_eps: float = 1e-3
  act: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Conv(self.features, _pair(self.kernel_size), _pair(self.strides),
                padding=torch_padding(self.padding), use_bias=False, kernel_init=conv_init,
                dtype=self.dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                     epsilon=self.bn_eps, dtype=self.dtype, name="bn")(x)
    return nn.relu(x) if self.act else x


class Pool(nn.Module):
  """3x3 pooling as the Inception figures use it: max (valid, stride 2) or average (same, stride 1).

  Average pooling excludes padded pixels from the mean (PyTorch `count_include_pad=False`, TF 'SAME').
  """
  kind: str  # 'max' | 'avg'
  window: int = 3
  strides: int = 1
  padding: int = 0

  def __call__(self, x, *, train: bool = False):
    del train
    window, strides = (self.window,) * 2, (self.strides,) * 2
    pad = torch_padding(self.padding)
    if self.kind == "max":
      return nn.max_pool(x, window, strides, pad)
    return nn.avg_pool(x, window, strides, pad, count_include_pad=False)


class Seq(nn.Module):
  """A chain of modules that all take `train`; members are named `layers_<i>` (timm: `.<i>.`).

  `capture` lists member indices whose outputs are returned as well, for feature extraction.
  Members may be built inside the caller's compact method: each is re-bound here, so its
  parameters live under this module whatever name the caller's scope gave it.
  """
  layers: Sequence[nn.Module]

  @nn.compact
  def __call__(self, x, *, train: bool, capture: Sequence[int] = ()) -> Any:
    feats: Dict[int, Any] = {}
    for i, layer in enumerate(self.layers):
      x = layer.clone(parent=self, name=f"layers_{i}")(x, train=train)
      if i in capture:
        feats[i] = x
    return (x, feats) if capture else x


def drop_path_rates(rate: float, depths: Sequence[int]) -> Tuple[Tuple[float, ...], ...]:
  """Stochastic-depth rates rising linearly from 0 to `rate` over all blocks, grouped by stage (the
  "linear decay" rule of Huang et al. 2016, counted from the input as timm does)."""
  rates = np.linspace(0.0, rate, sum(depths)).tolist()
  bounds = np.cumsum((0,) + tuple(depths))
  return tuple(tuple(rates[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))


class DropPath(nn.Module):
  """Stochastic depth (Huang, Sun, Liu, Sedra, Weinberger, "Deep Networks with Stochastic Depth",
  ECCV 2016) on a residual branch: in training each example's branch is zeroed with probability
  `rate` and kept ones are scaled by 1/(1 - rate), as timm's DropPath, so evaluation is the identity.
  Works on any rank (NHWC maps, token sequences); uses the 'dropout' RNG stream."""
  rate: float = 0.0
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:  # nothing survives (and 1/(1 - rate) is undefined)
      return jnp.zeros_like(x)
    keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate,
                                (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


def drop_path(rate: float, train: bool) -> DropPath:
  """The DropPath of one residual branch: `x + drop_path(rate, train)(branch(x))`."""
  return DropPath(rate, deterministic=not train)


def check_image(x, model: str, min_size: int, channels: Optional[int] = None):
  """One-line error for an input a model cannot take (wrong rank, too small, wrong channels)."""
  if x.ndim != 4:
    raise UserError(f"{model} expects images of shape (batch, height, width, channels); "
                    f"got an array of shape {tuple(x.shape)}")
  h, w = x.shape[1:3]
  if h < min_size or w < min_size:
    raise UserError(f"{model} needs images of at least {min_size}x{min_size} pixels "
                    f"(its valid-padded stem and reductions); got {h}x{w}")
  if channels is not None and x.shape[-1] != channels:
    raise UserError(f"{model} was built for {channels}-channel images; got {x.shape[-1]} channels")
