"""Layer-wise densities and random masks at a target global sparsity (paper 16 of the zoo).

Liu, Chen, Chen, Atashgahi, Yin, Kou, Shen, Pechenizkiy, Wang, Mocanu, "The Unreasonable Effectiveness
of Random Pruning: Return of the Most Naive Baseline for Sparse Training", ICLR 2022 (arXiv:2202.02643),
Sec. 3: a network pruned at random at initialisation, with layer-wise ratios chosen in advance, and
trained sparse from scratch.

Layer-wise densities (Sec. 3 of the paper; the scaling is RigL's, Evci et al. ICML 2020, Sec. 3 and
its `sparse_utils.get_sparsities`):
  uniform  every prunable layer at the target density;
  ER       density of layer l proportional to (n_in + n_out) / (n_in * n_out) (Erdos-Renyi, Mocanu et
           al. 2018), n_in / n_out the kernel's input / output channels;
  ERK      proportional to (n_in + n_out + k_h + k_w) / (n_in * n_out * k_h * k_w) (ER-Kernel): the sum
           of the kernel's dimensions over their product, for dense kernels too.
ER and ERK scale these by one factor eps so that the prunable parameters reach the target density;
a layer whose density would pass 1 is kept dense and eps is solved again over the rest (RigL's loop:
the largest raw density first, until none passes 1).

Which parameters are prunable: every conv and dense kernel (`include`, a regex on parameter paths;
BatchNorm scales and all biases never), minus `exclude`. Liu et al.'s code (built on Sparse
Momentum's `sparselearning` masking, which masks every 2-D and 4-D weight) prunes the first convolution
and the classifier too (verify), so the default excludes nothing; `exclude` keeps e.g. the stem
dense. The target sparsity is the fraction of zeros among the prunable parameters.

Exact counts: layer l keeps round(d_l * n_l) of its n_l weights, so its zero count is exact and the
global density is within one parameter per layer of the target; the kept positions are a uniformly
random subset of exactly that size.
"""
import re
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.pytree import path_str

METHODS = ("uniform", "er", "erk")


def prunable_paths(params, include: str = r".*kernel", exclude: str = "") -> Dict[str, Tuple[int, ...]]:
  """{path: shape} of the parameters that may be pruned: `include` matches the whole path, the
  tensor has two or more dimensions, and `exclude` (if given) matches nowhere in the path."""
  try:
    inc, exc = re.compile(include), re.compile(exclude) if exclude else None
  except re.error as e:
    raise UserError(f"sparsity.include / exclude is not a valid regex ({e})")
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name, shape = path_str(path), tuple(leaf.shape)
    if len(shape) >= 2 and inc.fullmatch(name) and not (exc and exc.search(name)):
      out[name] = shape
  return out


def _raw_density(shape: Tuple[int, ...], method: str) -> float:
  if method == "erk":  # every dimension of the kernel: (k_h + k_w + n_in + n_out) / product
    return sum(shape) / np.prod(shape)
  n_in, n_out = shape[-2], shape[-1]  # flax kernels: (..., n_in, n_out)
  return (n_in + n_out) / (n_in * n_out)


def layer_densities(shapes: Dict[str, Tuple[int, ...]], sparsity: float, method: str) -> Dict[str, float]:
  """Density of each layer such that the layers together reach density 1 - `sparsity`."""
  if method not in METHODS:
    raise UserError(f"unknown sparsity method '{method}' ({', '.join(METHODS)}, magnitude)")
  if not 0.0 <= sparsity < 1.0:
    raise UserError(f"sparsity must lie in [0, 1); got {sparsity}")
  if not shapes:
    raise UserError("no prunable parameters (check sparsity.include / exclude)")
  density = 1.0 - sparsity
  if method == "uniform":
    return {k: density for k in shapes}
  sizes = {k: float(np.prod(s)) for k, s in shapes.items()}
  raw = {k: _raw_density(s, method) for k, s in shapes.items()}
  dense: set = set()
  while True:
    # Dense layers already hold their share; the others split what is left in proportion to raw.
    budget = density * sum(sizes.values()) - sum(sizes[k] for k in dense)
    divisor = sum(raw[k] * sizes[k] for k in shapes if k not in dense)
    eps = budget / divisor
    over = [k for k in shapes if k not in dense and eps * raw[k] > 1.0]
    if not over:
      break
    top = max(raw[k] for k in over)
    dense |= {k for k in over if raw[k] == top}
  return {k: 1.0 if k in dense else eps * raw[k] for k in shapes}


def kept_counts(shapes: Dict[str, Tuple[int, ...]], sparsity: float, method: str) -> Dict[str, int]:
  """Number of weights each layer keeps: round(density * size), clipped to [0, size]."""
  dens = layer_densities(shapes, sparsity, method)
  return {k: int(min(max(round(dens[k] * np.prod(s)), 0), np.prod(s))) for k, s in shapes.items()}


def exact_mask(key: jax.Array, shape: Tuple[int, ...], keep: int) -> jax.Array:
  """Boolean mask with exactly `keep` True entries at uniformly random positions."""
  n = int(np.prod(shape))
  order = jax.random.permutation(key, n)
  return jnp.zeros((n,), bool).at[order[:keep]].set(True).reshape(shape)


def random_masks(key: jax.Array, params, sparsity: float, method: str, include: str = r".*kernel",
                 exclude: str = "") -> Any:
  """A boolean mask for every leaf of `params` (all True on the parameters that are not pruned)."""
  counts = kept_counts(prunable_paths(params, include, exclude), sparsity, method)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(key, len(leaves))  # one key per leaf, by its position in the tree
  masks = []
  for k, (path, leaf) in zip(keys, leaves):
    name = path_str(path)
    masks.append(exact_mask(k, leaf.shape, counts[name]) if name in counts else jnp.ones(leaf.shape, bool))
  return jax.tree_util.tree_unflatten(treedef, masks)


def density_report(masks) -> Dict[str, float]:
  """{path: fraction of True entries} for every mask with at least one False, and 'global' over them."""
  out, kept, total = {}, 0, 0
  for path, m in jax.tree_util.tree_flatten_with_path(masks)[0]:
    m = np.asarray(m)
    if m.all():
      continue
    out[path_str(path)] = float(m.mean())
    kept, total = kept + int(m.sum()), total + m.size
  if total:
    out["global"] = kept / total
  return out


def map_prunable(fn: Callable[[jax.Array, jax.Array], jax.Array], params, masks, names) -> Any:
  """masks with fn(weights, mask) in place of the mask of every parameter whose path is in `names`."""
  return jax.tree_util.tree_map_with_path(
      lambda p, w, m: fn(w, m) if path_str(p) in names else m, params, masks)
