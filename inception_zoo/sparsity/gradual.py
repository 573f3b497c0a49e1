"""Gradual magnitude pruning (paper 17 of the zoo).

Elsen, Dukhan, Gale, Simonyan, "Fast Sparse ConvNets", CVPR 2020 (arXiv:1911.09723), Sec. 5: the
networks are sparsified during training with the gradual magnitude pruning of Zhu & Gupta, "To prune,
or not to prune: exploring the efficacy of pruning for model compression", ICLR Workshop 2018
(arXiv:1710.01878), Sec. 3, Eq. 1:

    s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (n dt))^3     for t in {t_0, t_0 + dt, ..., t_0 + n dt},

s_i / s_f the initial / final sparsity, pruning every dt steps from t_0 for n steps; at each such step
every pruned layer keeps its largest-magnitude weights, and pruned weights stay zero (they never grow
back: their magnitude is zero). Elsen et al. prune the 1x1 convolutions and the classifier and keep
the first full convolution and the depthwise convolutions dense (they hold a few % of the
parameters and are not SpMM-shaped); `include` / `exclude` in the config say which. This is
tensorflow-model-optimization's `PolynomialDecay(power=3)` with begin_step t_0, end_step t_0 + n dt
and frequency dt, which Zhu & Gupta's code became.
"""
from typing import Tuple

import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError


def check_schedule(initial: float, final: float, begin_step: int, end_step: int, frequency: int):
  if not (0.0 <= initial <= final < 1.0):
    raise UserError(f"gradual pruning needs 0 <= initial_sparsity <= sparsity < 1; got {initial}, {final}")
  if not (0 <= begin_step <= end_step) or frequency < 1:
    raise UserError(f"gradual pruning needs 0 <= begin_step <= end_step and frequency >= 1; got "
                    f"{begin_step}, {end_step}, {frequency}")


def cubic_sparsity(step, initial: float, final: float, begin_step: int, end_step: int):
  """s_t of Zhu & Gupta's Eq. 1 (clamped to s_i before t_0 and s_f after t_0 + n dt)."""
  span = max(end_step - begin_step, 1)
  progress = jnp.clip((jnp.asarray(step, jnp.float32) - begin_step) / span, 0.0, 1.0)
  return final + (initial - final) * (1.0 - progress) ** 3


def is_pruning_step(step, begin_step: int, end_step: int, frequency: int):
  """Whether the masks are recomputed at `step`: t_0, t_0 + dt, ... and t_0 + n dt = end_step itself
  (so s_f is reached even when dt does not divide the span)."""
  step = jnp.asarray(step)
  return ((step >= begin_step) & (step <= end_step) & ((step - begin_step) % frequency == 0)) | (step == end_step)


def magnitude_mask(weights: jax.Array, sparsity) -> jax.Array:
  """Keeps the n - round(sparsity * n) largest |w| (ties: the later index wins); exact count, traced
  sparsity allowed."""
  flat = jnp.abs(weights).reshape(-1)
  n = flat.shape[0]
  zeros = jnp.round(sparsity * n).astype(jnp.int32)
  ranks = jnp.zeros((n,), jnp.int32).at[jnp.argsort(flat, stable=True)].set(jnp.arange(n, dtype=jnp.int32))
  return (ranks >= zeros).reshape(weights.shape)


def schedule_values(initial: float, final: float, begin_step: int, end_step: int,
                    frequency: int) -> Tuple[Tuple[int, float], ...]:
  """(step, sparsity) at every pruning step, for reports and tests."""
  steps = sorted(set(range(begin_step, end_step + 1, frequency)) | {end_step})
  return tuple((t, float(cubic_sparsity(t, initial, final, begin_step, end_step))) for t in steps)
