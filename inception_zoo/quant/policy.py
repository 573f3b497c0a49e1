"""Per-layer quantisation policies with post-training quantisation (PTQ): the precision half of SimQ-NAS's
joint search space.

Sridhar, Szankin, Chen, Sundaresan, Sarah, "SimQ-NAS: Simultaneous Quantization Policy and Neural
Architecture Search", arXiv:2312.13301, 2023. The paper searches, per layer, whether it runs in INT8 or
stays in full precision (Intel Neural Compressor's mixed-precision PTQ); the CPU setting here adds INT4.

- A policy gives every layer one bit-width b for its weights and its input activations (W{b}A{b});
  b >= 32 (`FULL`) leaves the layer unquantised. Weights: symmetric per-output-channel scales from the
  weights themselves (`uniform.quantize_weight`). Activations: affine per-tensor with a range calibrated
  once on a few batches of the full-precision network (static PTQ), not the tensor's own range at run time.
- Model size = sum over the layers of b x weights + 32 x biases (our reading: biases stay 32-bit, as
  INT8 kernels accumulate and add them in INT32).
- `pack_weight` / `integer_dense` are the deployed form of a quantised layer: integer codes and one
  integer matrix product (int8 x int8 -> int32 on the CPU) that reproduces the fake-quantised layer; the
  latency of the search is measured on it. No CPU kernel computes in 4 bits, so an INT4 layer runs the
  INT8 kernel (our reading: INT4 saves size, not time, here).
"""
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.quant.uniform import quantize_weight, ste

FULL = 32  # bits that mean "not quantised"


def check_bits(bits: Sequence[int]):
  bad = [b for b in bits if not 2 <= int(b) <= 8 and int(b) != FULL]
  if bad:
    raise UserError(f"bit-width {bad[0]} is not supported (2 to 8 bits, or {FULL} for full precision)")


def activation_grid(bits, lo, hi):
  """(scale, zero point, largest code) of the affine b-bit grid over the calibrated [lo, hi] widened to
  contain 0, so that zero padding and ReLU zeros stay exact."""
  levels = 2.0 ** jnp.asarray(bits, jnp.float32) - 1
  lo, hi = jnp.minimum(lo, 0.0), jnp.maximum(hi, 0.0)
  scale = jnp.where(hi > lo, (hi - lo) / levels, 1.0)
  return scale, jnp.round(-lo / scale), levels


def quantize_calibrated(x, bits, lo, hi):
  """Affine per-tensor fake quantisation of `x` on the calibrated range (values outside are clipped)."""
  scale, zero, levels = activation_grid(bits, lo, hi)
  q = (jnp.clip(jnp.round(x / scale) + zero, 0, levels) - zero) * scale
  return ste(x, q.astype(x.dtype))


def fake_quantize(x, kernel, bits, act_range):
  """The layer's input and kernel as the policy's `bits` see them (unchanged at `FULL` bits); `bits` may
  be traced, so one compiled network serves every policy."""
  full = jnp.asarray(bits) >= FULL
  qx = quantize_calibrated(x, bits, act_range[0], act_range[1])
  return jnp.where(full, x, qx), jnp.where(full, kernel, quantize_weight(kernel, bits))


def calibrated_ranges(intermediates: Mapping, names: Sequence[str]) -> jax.Array:
  """(layers, 2) [min, max] of each named layer's input from the `input_range` values the layers sowed
  over the calibration batches (`mutable=["intermediates"]`)."""
  ranges = []
  for name in names:
    if name not in intermediates:
      raise UserError(f"layer '{name}' recorded no input range during calibration")
    seen = jnp.stack(intermediates[name]["input_range"])  # (calls, 2)
    ranges.append(jnp.stack([seen[:, 0].min(), seen[:, 1].max()]))
  return jnp.stack(ranges)


def size_bits(fan_in, fan_out, bits, active=None) -> np.ndarray:
  """Model size in bits: sum over layers of bits x fan_in x fan_out + 32 x fan_out (biases), over the last
  axis (layers); `active` (same shape, bool) drops the layers a subnet skips."""
  fan_in, fan_out, bits = (np.asarray(a, np.int64) for a in (fan_in, fan_out, bits))
  per_layer = np.minimum(bits, FULL) * fan_in * fan_out + FULL * fan_out
  if active is not None:
    per_layer = per_layer * np.asarray(active, bool)
  return per_layer.sum(-1)


def pack_weight(kernel, bits: int):
  """Integer codes (int8, |code| <= 2^(b-1) - 1), per-output-channel scales and the codes' column sums
  of a (fan_in, fan_out) kernel: `quantize_weight`'s grid stored as integers (numpy: a one-off
  conversion at deployment, nothing to compile)."""
  kernel = np.asarray(kernel, np.float32)
  qmax = np.float32(2.0 ** (bits - 1) - 1)
  scale = np.max(np.abs(kernel), axis=0) / qmax
  scale = np.where(scale > 0, scale, np.float32(1.0))
  codes = np.clip(np.round(kernel / scale), -qmax, qmax).astype(np.int8)
  return jnp.asarray(codes), jnp.asarray(scale), jnp.asarray(codes.astype(np.int32).sum(0))


def integer_dense(x, packed, bias, bits, act_range):
  """y = Q(x) Q(W) + b with one int8 x int8 -> int32 product. Activation codes 0..2^b-1 are shifted by
  -128 into int8 (the uint8 -> int8 offset of x86 INT8 kernels); the shift and the zero point come back
  as a per-column correction from the weight codes' column sums, so the product is exact."""
  codes, w_scale, col_sum = packed
  scale, zero, levels = activation_grid(bits, act_range[0], act_range[1])
  x_codes = (jnp.clip(jnp.round(x / scale) + zero, 0, levels) - 128).astype(jnp.int8)
  acc = jax.lax.dot_general(x_codes, codes, (((x.ndim - 1,), (0,)), ((), ())),
                            preferred_element_type=jnp.int32)
  acc = acc + (128 - zero).astype(jnp.int32) * col_sum
  return acc.astype(jnp.float32) * (scale * w_scale) + bias
