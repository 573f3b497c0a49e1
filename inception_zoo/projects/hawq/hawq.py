"""HAWQ's mixed-precision rules: bits per layer from the Hessian spectrum under a size budget, and
the order of the multi-stage fine-tuning.

Dong, Yao, Gholami, Mahoney, Keutzer, "HAWQ: Hessian AWare Quantization of Neural Networks with
Mixed-Precision", ICCV 2019 (arXiv:1905.03696).

- Block i's sensitivity is S_i = lambda_i / n_i, its top Hessian eigenvalue over its
  parameter count; blocks sorted by S_i get non-increasing precision. The paper picks the bits
  by hand along that order under a model-size target; `allocate_bits` makes the choice mechanical:
  every block starts at the lowest candidate, then, most sensitive first, each block takes the
  highest candidate the remaining budget pays for (size = sum of bits x parameters).
- `pareto_bits` is the automatic selection HAWQ-V2 (Dong et al., NeurIPS 2020) made of
  that choice: among the allocations within the budget, the one that minimises the total
  second-order perturbation sum_i lambda_i ||Q(W_i) - W_i||^2 (HAWQ-V2 weights it by the trace; any
  per-block curvature can be passed), found by upgrading, one step at a time, the block with the
  largest perturbation decrease per added bit.
- The fine-tuning order sorts blocks by Omega_i = lambda_i ||Q(W_i) - W_i||^2, the
  second-order estimate of the loss increase from quantising the block, in descending order: the
  block whose quantisation perturbs the loss most is quantised and fine-tuned first, the others
  (still in full precision) adapt to it in the later stages.
"""
from typing import Dict, List, Mapping, Sequence

import jax
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.quant.uniform import quantize_weight
from inception_zoo.pytree import path_str


def leaf_sizes(params, paths: Sequence[str]) -> Dict[str, int]:
  """{path: number of parameters} for the named leaves."""
  flat = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  missing = [p for p in paths if p not in flat]
  if missing:
    raise UserError(f"no parameter '{missing[0]}' in the model")
  return {p: int(np.size(flat[p])) for p in paths}


def sensitivities(eigenvalues: Mapping[str, float], sizes: Mapping[str, int]) -> Dict[str, float]:
  """S_i = lambda_i / n_i (HAWQ's sensitivity)."""
  return {k: float(eigenvalues[k]) / sizes[k] for k in eigenvalues}


def model_bits(bits: Mapping[str, int], sizes: Mapping[str, int]) -> int:
  """Size of the quantised layers in bits: sum of bits x parameters."""
  return int(sum(bits[k] * sizes[k] for k in bits))


def uniform_bits(sizes: Mapping[str, int], bits: int) -> Dict[str, int]:
  return {k: int(bits) for k in sizes}


def allocate_bits(sensitivity: Mapping[str, float], sizes: Mapping[str, int], candidates: Sequence[int],
                  budget: int) -> Dict[str, int]:
  """Bits per block from the sensitivity ranking under `budget` bits (see the module docstring).
  Passing negated sensitivities gives the reversed ranking of the paper's ablation."""
  candidates = sorted(int(b) for b in candidates)
  bits = {k: candidates[0] for k in sizes}
  if model_bits(bits, sizes) > budget:
    raise UserError(f"size budget {budget} bits is below the {model_bits(bits, sizes)} bits of every "
                    f"layer at {candidates[0]} bits")
  left = budget - model_bits(bits, sizes)
  for k in sorted(sizes, key=lambda k: -sensitivity[k]):
    for b in reversed(candidates):
      extra = (b - bits[k]) * sizes[k]
      if extra <= left:
        left -= extra
        bits[k] = b
        break
  return bits


def _squared_error(w, bits: int) -> float:
  return float(np.sum((np.asarray(quantize_weight(w, bits)) - np.asarray(w)) ** 2))


def pareto_bits(curvature: Mapping[str, float], params, sizes: Mapping[str, int], candidates: Sequence[int],
                budget: int) -> Dict[str, int]:
  """Bits per block minimising sum_i curvature_i ||Q(W_i) - W_i||^2 within `budget` bits (greedy
  on the marginal decrease per bit; see the module docstring)."""
  candidates = sorted(int(b) for b in candidates)
  flat = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  omega = {(k, b): float(curvature[k]) * _squared_error(flat[k], b) for k in sizes for b in candidates}
  bits = {k: candidates[0] for k in sizes}
  if model_bits(bits, sizes) > budget:
    raise UserError(f"size budget {budget} bits is below the {model_bits(bits, sizes)} bits of every "
                    f"layer at {candidates[0]} bits")
  left = budget - model_bits(bits, sizes)
  while True:
    best, gain = None, 0.0
    for k in sizes:
      for b in candidates:
        extra = (b - bits[k]) * sizes[k]
        if b > bits[k] and extra <= left:
          rate = (omega[(k, bits[k])] - omega[(k, b)]) / extra
          if rate > gain:
            best, gain = (k, b), rate
    if best is None:
      return bits
    left -= (best[1] - bits[best[0]]) * sizes[best[0]]
    bits[best[0]] = best[1]


def perturbations(eigenvalues: Mapping[str, float], params, bits: Mapping[str, int]) -> Dict[str, float]:
  """Omega_i = lambda_i ||Q(W_i) - W_i||^2 at the allocated bits (HAWQ's fine-tuning criterion)."""
  flat = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  return {k: float(eigenvalues[k]) * _squared_error(flat[k], b) for k, b in bits.items()}


def finetune_order(omega: Mapping[str, float]) -> List[str]:
  """Blocks in descending Omega: the order in which they are quantised and fine-tuned."""
  return sorted(omega, key=lambda k: -omega[k])
