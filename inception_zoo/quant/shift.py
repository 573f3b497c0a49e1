"""DenseShift low-bit shift weights: zero-free signed powers of two, the sign-scale decomposition
used to train them, direct training as the baseline, the weight-freezing metric, low-variance
initialisation, and the multiplication-free inference check.

Li, Liu, Yang, Courville, Xing, Partovi Nia, "DenseShift: Towards Accurate and Efficient Low-Bit
Power-of-Two Quantization", ICCV 2023 (arXiv:2208.09708).

- Zero-free shift weights: a b-bit weight is s * 2^p with s in {-1, +1} and p in
  {0, ..., 2^(b-1) - 1} (3 bits: +-1, +-2, +-4, +-8); no code is spent on zero. A per-output-channel
  scale alpha multiplies the layer's output, so it folds into the BatchNorm that follows: the
  convolution itself only shifts and adds.
- Sign-scale decomposition (as in the authors' `DenseShiftConv2d3bit`): the sign is the
  sign of a latent weight, s = sign(w) (+1 at 0), and p is built from n = 2^(b-1) - 1 latent
  binaries b_j = [t_j > 0] nested as p = ((b_1 + 1) b_2 + 1) b_3 ... (p = b_1, then p <- (p + 1) b_j),
  all with straight-through gradients. The forward pass uses s * 2^p; the backward pass goes through
  the smooth surrogate s * sqrt(p + 1), as the official code does.
- The zero-including baseline is the S3 reparametrisation of the same authors (Li et al., "S3:
  Sign-Sparse-Shift Reparametrization for Effective Training of Low-bit Shift Networks", NeurIPS 2021):
  s * z * 2^q with a latent sparsity binary z and q from the remaining 2^(b-1) - 2 binaries (3 bits:
  0, +-1, +-2, +-4), the same number of latent tensors, differentiated through 2^q as its code is.
- Direct training (the baseline the decomposition is measured against): the kernel itself is a
  full-precision latent quantised to sign(w) * 2^round(log2(|w| / alpha)) on the same zero-free
  levels and channel scale, with the straight-through estimator (the DeepShift-Q / LSQ-style
  training of shift networks; DeepShift-Q rounds log2|w| without a channel scale). Only the
  training parametrisation differs from DenseShift, so both start from the same levels.
- Weight freezing (our reading: the paper's exact definition could not be retrieved; verify):
  the share of quantised weights whose level at the end of a training window equals the level
  at its start. A latent must travel to a level boundary before its weight moves, and the
  boundaries of 2^p widen with p, so directly trained weights mostly stay where they started;
  the decomposition's binaries start next to their thresholds and move the weight with any
  gradient of the right sign. A low share means the low-bit weights keep learning. Measured in
  `experiments/denseshift.py` (digits, ResNet-20, 3 bits, 100 steps from the same transferred
  levels): 99.4% frozen when trained directly, 54% with the decomposition.
- Low-variance random initialisation (our reading: verify): latent binaries start at
  +-delta or N(0, delta^2) with a small delta, so that early updates can flip them; here also
  used when the latents encode a pre-trained weight (`encode`), which keeps the transferred
  values while leaving them free to move.
- Multiplication-free inference (the paper's Sec. 3.1 / Fig. 2): x * s * 2^p is `ldexp(x, p)` with a
  sign flip, an exponent addition; `shift_matmul` computes a layer that way.
"""
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError


def num_latents(bits: int) -> int:
  """Latent binaries per weight: 2^(b-1) - 1 for both schemes (3 bits: 3)."""
  if bits < 2:
    raise UserError(f"shift weights need at least 2 bits (a sign and one exponent bit); got {bits}")
  return 2 ** (bits - 1) - 1


def max_exponent(bits: int, zero_free: bool) -> int:
  return 2 ** (bits - 1) - 1 if zero_free else 2 ** (bits - 1) - 2


def binarize01(t):
  """[t > 0] forward, identity backward (the official STEBinarize01F)."""
  return t + jax.lax.stop_gradient(jnp.where(t > 0, 1.0, 0.0).astype(t.dtype) - t)


def sign_ste(w):
  """sign(w) with +1 at 0 forward, identity backward (the official STBinarizeF)."""
  return w + jax.lax.stop_gradient(jnp.where(w >= 0, 1.0, -1.0).astype(w.dtype) - w)


def nested_exponent(binaries):
  """p = ((b_1 + 1) b_2 + 1) b_3 ... over the leading axis: p in {0, ..., len(binaries)}."""
  p = jnp.zeros_like(binaries[0]) if binaries.shape[0] == 0 else binaries[0]
  for j in range(1, binaries.shape[0]):
    p = (p + 1) * binaries[j]
  return p


def shift_weight(sign_latent, latents, zero_free: bool = True):
  """The integer-valued shift weight (+-2^p, or 0 / +-2^q for the zero-including scheme) with the
  decomposition's gradients. `latents` has the weight's shape with a leading axis of num_latents."""
  s = sign_ste(sign_latent)
  if zero_free:
    p = nested_exponent(binarize01(latents))
    forward = s * jnp.exp2(jax.lax.stop_gradient(p))
    surrogate = s * jnp.sqrt(p + 1.0)
    return surrogate + jax.lax.stop_gradient(forward - surrogate)
  z = binarize01(latents[0])
  q = nested_exponent(binarize01(latents[1:])) if latents.shape[0] > 1 else jnp.zeros_like(z)
  return s * z * jnp.exp2(q)  # the S3 code differentiates 2^q itself


def channel_scale(sign_latent, bits: int, zero_free: bool = True):
  """alpha per output channel (last axis): the latent's largest magnitude over the largest level, so
  the shift weights span the latent's range; no gradient (it folds into the next BatchNorm)."""
  axes = tuple(range(sign_latent.ndim - 1))
  peak = jnp.max(jnp.abs(sign_latent), axis=axes, keepdims=True)
  peak = jnp.where(peak > 0, peak, 1.0)
  return jax.lax.stop_gradient(peak / 2.0 ** max_exponent(bits, zero_free))


def nearest_exponent(w, bits: int, zero_free: bool = True):
  """round(log2(|w| / alpha)) clipped to the levels: the level nearest to w in the log domain."""
  ratio = jnp.abs(w) / channel_scale(w, bits, zero_free)
  p = jnp.round(jnp.log2(jnp.maximum(ratio, 2.0 ** -30)))
  return jnp.clip(p, 0, max_exponent(bits, zero_free))


def direct_weight(w, bits: int):
  """The integer-valued zero-free shift weight sign(w) * 2^p of a directly quantised kernel (no
  scale, +1 at 0)."""
  return jnp.where(w >= 0, 1.0, -1.0) * jnp.exp2(nearest_exponent(w, bits))


def direct_kernel(w, bits: int):
  """alpha * sign(w) * 2^p forward, identity backward: direct training of a shift kernel."""
  q = channel_scale(w, bits) * direct_weight(w, bits)
  return w + jax.lax.stop_gradient(q - w)


def effective_kernel(sign_latent, latents, bits: int, zero_free: bool = True):
  return channel_scale(sign_latent, bits, zero_free) * shift_weight(sign_latent, latents, zero_free)


def low_variance_init(key, shape: Tuple[int, ...], bits: int, std: float = 1e-3):
  """Latent binaries drawn from N(0, std^2): each starts at random next to its threshold."""
  return std * jax.random.normal(key, (num_latents(bits), *shape))


def encode(w, bits: int, zero_free: bool = True, delta: float = 1e-3):
  """Latents (+-delta) whose shift weight is the level nearest to `w` / alpha in the log domain
  (and zero below half the smallest level for the zero-including scheme): transfer from a
  full-precision kernel. The sign latent is `w` itself."""
  w = np.asarray(w, np.float32)
  n = num_latents(bits)
  p = np.asarray(nearest_exponent(jnp.asarray(w), bits, zero_free)).astype(np.int32)
  if zero_free:
    # p = ((b_1 + 1) b_2 + 1) b_3 ...: the last p binaries set, the one before them clear.
    on = np.arange(n).reshape((n,) + (1,) * w.ndim) >= n - p[None]
  else:
    rest = n - 1
    shift_on = np.arange(rest).reshape((rest,) + (1,) * w.ndim) >= rest - p[None]
    ratio = np.abs(w) / np.asarray(channel_scale(jnp.asarray(w), bits, zero_free))
    on = np.concatenate([(ratio >= 0.5)[None], shift_on], axis=0)
  return np.where(on, delta, -delta).astype(np.float32)


def quantized_values(sign_latent, latents, zero_free: bool = True) -> np.ndarray:
  """The shift weights as integers (no scale): what inference stores."""
  w = shift_weight(jnp.asarray(sign_latent), jnp.asarray(latents), zero_free)
  return np.asarray(jax.lax.stop_gradient(w))


def is_signed_power_of_two(w) -> np.ndarray:
  """Elementwise: w == +-2^k for an integer k (zero is not)."""
  mantissa, _ = np.frexp(np.asarray(w))
  return np.abs(mantissa) == 0.5


def frozen_share(before, after) -> float:
  """Weight freezing: the share of quantised weights with the same value at the start (`before`)
  and the end (`after`) of a training window (our reading of the paper's metric, see above)."""
  before, after = np.asarray(before), np.asarray(after)
  if before.shape != after.shape:
    raise UserError(f"snapshots differ in shape: {before.shape} vs {after.shape}")
  return float(np.mean(before == after))


def sign_and_exponent(w) -> Tuple[np.ndarray, np.ndarray]:
  """(sign, exponent) of zero-free shift weights, or a one-line error if one is not +-2^k."""
  w = np.asarray(w)
  if not np.all(is_signed_power_of_two(w)):
    raise UserError(f"{int(np.sum(~is_signed_power_of_two(w)))} weights are not signed powers of two")
  _, e = np.frexp(w)
  return np.sign(w).astype(np.int8), (e - 1).astype(np.int32)


def shift_matmul(x, sign, exponent):
  """x @ (sign * 2^exponent) without a multiplication: each term is ldexp(x, p) (an exponent add),
  negated where the sign is -1, then summed over the input axis."""
  terms = jnp.ldexp(x[..., :, None], jnp.asarray(exponent))
  return jnp.sum(jnp.where(jnp.asarray(sign) > 0, terms, -terms), axis=-2)


def shift_conv(x, sign, exponent, strides=(1, 1), padding="SAME"):
  """NHWC convolution with an HWIO shift kernel through `shift_matmul` on the input's patches."""
  kh, kw, cin, cout = sign.shape
  patches = jax.lax.conv_general_dilated_patches(
      x, (kh, kw), strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  # Patches come channel-major (cin, kh, kw); reorder the kernel to match.
  order = lambda a: jnp.transpose(jnp.asarray(a), (2, 0, 1, 3)).reshape(cin * kh * kw, cout)
  return shift_matmul(patches, order(sign), order(exponent))
