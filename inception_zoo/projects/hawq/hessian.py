"""Per-block Hessian spectrum of a loss: top eigenvalue by power iteration and trace by Hutchinson.

HAWQ (Dong, Yao, Gholami, Mahoney, Keutzer, "HAWQ: Hessian AWare Quantization of Neural Networks with
Mixed-Precision", ICCV 2019, arXiv:1905.03696): the sensitivity of block i is the top
eigenvalue of its diagonal Hessian block H_ii, found by power iteration on Hessian-vector products
(as in the authors' PyHessian). HAWQ-V2 (Dong et al., NeurIPS 2020, arXiv:1911.03852):
the trace of H_ii by Hutchinson's estimator, E[v^T H v] over Rademacher v.

A Hessian-vector product is forward-over-reverse, `jax.jvp` of `jax.grad` (Pearlmutter's trick): one
linearised backward pass, never the Hessian itself. A block is a set of parameter leaves (by default
each convolution or dense kernel: HAWQ's ResNet-20 layers); H_ii v_i is the i-th block of H v for a
v that is zero outside block i, so each block's power iteration runs on its own vector through one
compiled product. The trace needs no masking: for Rademacher v over all leaves, v_i^T (H v)_i has
expectation tr(H_ii) (the off-diagonal blocks contribute terms of zero mean), so every block's
trace comes from the same products.

`loss_fn(params, batch) -> scalar`; every estimate averages the products over `batches` (as PyHessian
does with its data loader). `model_loss` gives that function for a registered classifier, with
BatchNorm in inference mode (as PyHessian's `model.eval()`).
"""
import re
import sys
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from inception_zoo.errors import UserError
from inception_zoo.pytree import path_str

DEFAULT_BLOCKS = r".*kernel"


def hvp(loss_fn: Callable, params, batch, v):
  """H v for the Hessian of `loss_fn(., batch)` at `params`, forward-over-reverse."""
  return jax.jvp(lambda p: jax.grad(loss_fn)(p, batch), (params,), (v,))[1]


def model_loss(model, batch_stats) -> Callable:
  """Mean softmax cross-entropy of a `(logits, features)` classifier on {'image', 'label'} batches."""

  def loss_fn(params, batch):
    logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["label"]).mean()

  return loss_fn


def blocks(params, select: str = DEFAULT_BLOCKS,
           group: Optional[Callable[[str], str]] = None) -> Dict[str, List[str]]:
  """{block name: leaf paths}: the leaves whose path fully matches `select`, each its own block
  unless `group(path)` names a coarser one (e.g. a residual block's prefix)."""
  try:
    regex = re.compile(select)
  except re.error as e:
    raise UserError(f"block selection '{select}' is not a valid regex ({e})")
  out: Dict[str, List[str]] = {}
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_str(path)
    if regex.fullmatch(name):
      out.setdefault(group(name) if group else name, []).append(name)
  if not out:
    raise UserError(f"no parameter path matches '{select}'")
  return out


def _masks(params, block: Sequence[str]):
  members = set(block)
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.asarray(path_str(p) in members, x.dtype), params)


def _dot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _mean_hvp(loss_fn, params, batches, v):
  total = None
  for batch in batches:
    hv = hvp(loss_fn, params, batch, v)
    total = hv if total is None else jax.tree.map(jnp.add, total, hv)
  return jax.tree.map(lambda t: t / len(batches), total)


def _progress(total: int, desc: str, show: bool):
  return tqdm.tqdm(total=total, desc=desc, disable=not show, file=sys.stderr, dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30)


def top_eigenvalues(loss_fn: Callable, params, batches: Sequence, block_map: Dict[str, List[str]],
                    key: jax.Array, max_iters: int = 100, tol: float = 1e-3,
                    progress: bool = True) -> Dict[str, float]:
  """{block: eigenvalue of H_ii of largest magnitude}, by power iteration from a Gaussian start,
  stopped when the Rayleigh quotient changes by less than `tol` relative (PyHessian's rule) or after
  `max_iters` products. One compiled step serves every block: the block enters as a 0/1 mask."""

  @jax.jit
  def step(params, batches, v, mask):
    hv = jax.tree.map(jnp.multiply, _mean_hvp(loss_fn, params, batches, v), mask)
    eig = _dot(v, hv)
    norm = jnp.sqrt(_dot(hv, hv))
    return eig, jax.tree.map(lambda x: x / jnp.maximum(norm, 1e-30), hv)

  out = {}
  batches = list(batches)
  bar = _progress(len(block_map), "hessian eigenvalues", progress)
  for i, (name, members) in enumerate(block_map.items()):
    mask = _masks(params, members)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, i), len(leaves))
    v = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
    v = jax.tree.map(jnp.multiply, v, mask)
    v = jax.tree.map(lambda x: x / jnp.sqrt(_dot(v, v)), v)
    eig = None
    for _ in range(max_iters):
      new, v = step(params, batches, v, mask)
      new = float(new)
      if eig is not None and abs(new - eig) <= tol * (abs(eig) + 1e-6):
        eig = new
        break
      eig = new
    out[name] = eig
    bar.update(1)
  bar.close()
  return out


def traces(loss_fn: Callable, params, batches: Sequence, block_map: Dict[str, List[str]],
           key: jax.Array, num_samples: int = 100, chunk: int = 50,
           progress: bool = True) -> Dict[str, float]:
  """{block: Hutchinson estimate of tr(H_ii)} from `num_samples` Rademacher vectors over all leaves,
  `chunk` of them per compiled call (vmapped)."""
  names = {leaf: name for name, members in block_map.items() for leaf in members}

  def one(params, batches, key):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    v = jax.tree.unflatten(treedef, [jax.random.rademacher(k, x.shape, x.dtype)
                                     for k, x in zip(keys, leaves)])
    hv = _mean_hvp(loss_fn, params, batches, v)
    flat_v = jax.tree_util.tree_flatten_with_path(v)[0]
    return {path_str(p): jnp.vdot(x, y) for (p, x), y in zip(flat_v, jax.tree.leaves(hv))
            if path_str(p) in names}

  sample = jax.jit(lambda params, batches, keys: jax.vmap(one, (None, None, 0))(params, batches, keys))
  sums = {name: 0.0 for name in block_map}
  batches = list(batches)
  bar = _progress(num_samples, "hessian trace", progress)
  for start in range(0, num_samples, chunk):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(start, min(start + chunk, num_samples)))
    for leaf, values in jax.device_get(sample(params, batches, keys)).items():
      sums[names[leaf]] += float(np.sum(values))
    bar.update(len(keys))
  bar.close()
  return {name: s / num_samples for name, s in sums.items()}


def dense_block_hessian(loss_fn: Callable, params, batches: Sequence, members: Sequence[str]) -> np.ndarray:
  """The block H_ii as a dense matrix from `jax.hessian` of the loss restricted to the block's
  leaves (tiny networks only: an independent check of the matrix-free estimates)."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  index = [i for i, (p, _) in enumerate(flat) if path_str(p) in set(members)]
  leaves = [x for _, x in flat]
  sizes = [leaves[i].size for i in index]

  def restricted(theta):
    parts = jnp.split(theta, np.cumsum(sizes)[:-1])
    new = list(leaves)
    for i, part in zip(index, parts):
      new[i] = part.reshape(leaves[i].shape)
    p = jax.tree.unflatten(treedef, new)
    return sum(loss_fn(p, b) for b in batches) / len(batches)

  theta = jnp.concatenate([leaves[i].ravel() for i in index])
  return np.asarray(jax.jit(jax.hessian(restricted))(theta))
