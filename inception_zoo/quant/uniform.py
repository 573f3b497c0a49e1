"""Uniform fake quantisation with the straight-through estimator (STE).

The quantiser HAWQ uses (Dong et al., "HAWQ: Hessian AWare Quantization of Neural Networks with
Mixed-Precision", ICCV 2019; its code quantises weights symmetrically per output
channel and activations with a per-tensor affine range): a b-bit symmetric weight takes the values
k * s for integers |k| <= 2^(b-1) - 1 with s = max|w| / (2^(b-1) - 1) per output channel (one bit,
which that grid cannot express, is the channel's scaled sign); a b-bit
affine activation takes 2^b levels between the tensor's min and max. The forward pass sees the
quantised value, the backward pass the identity (Bengio et al. 2013's STE): `x + stop_gradient(q - x)`.

Bit widths may be traced arrays, so one compiled step serves every bit allocation.
"""
import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp


def ste(x, q):
  """`q` in the forward pass, the identity's gradient in the backward pass."""
  return x + jax.lax.stop_gradient(q - x)


def symmetric_levels(bits):
  """Largest integer level of a signed b-bit symmetric quantiser (2 bits: {-1, 0, 1})."""
  return 2.0 ** (jnp.asarray(bits, jnp.float32) - 1) - 1


def quantize_weight(w, bits):
  """Symmetric per-output-channel fake quantisation of a Flax kernel (output channels last). One bit
  is the binary sign(w) x mean|w| of each channel (BinaryConnect / XNOR-Net's scaled sign), as the
  symmetric grid has no nonzero level at one bit."""
  qmax = jnp.maximum(symmetric_levels(bits), 1.0)
  axes = tuple(range(w.ndim - 1))
  scale = jnp.max(jnp.abs(w), axis=axes, keepdims=True) / qmax
  scale = jax.lax.stop_gradient(jnp.where(scale > 0, scale, 1.0))
  q = jnp.clip(jnp.round(w / scale), -qmax, qmax) * scale
  magnitude = jax.lax.stop_gradient(jnp.mean(jnp.abs(w), axis=axes, keepdims=True))
  binary = jnp.where(w >= 0, 1.0, -1.0) * magnitude
  return ste(w, jnp.where(jnp.asarray(bits) == 1, binary, q).astype(w.dtype))


def quantize_activation(x, bits):
  """Affine per-tensor fake quantisation over the tensor's own [min, max] (zero exactly representable)."""
  levels = 2.0 ** jnp.asarray(bits, jnp.float32) - 1
  lo = jax.lax.stop_gradient(jnp.minimum(jnp.min(x), 0.0))
  hi = jax.lax.stop_gradient(jnp.maximum(jnp.max(x), 0.0))
  scale = jnp.where(hi > lo, (hi - lo) / levels, 1.0)
  zero = jnp.round(-lo / scale)
  q = (jnp.clip(jnp.round(x / scale) + zero, 0, levels) - zero) * scale
  return ste(x, q.astype(x.dtype))


@contextlib.contextmanager
def quantized_inputs(bits):
  """Within the context, every nn.Conv and nn.Dense of any model sees its input fake-quantised to
  `bits` (no model is edited: Flax's method interception)."""

  def intercept(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.Dense)) and args:
      args = (quantize_activation(args[0], bits),) + tuple(args[1:])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(intercept):
    yield
