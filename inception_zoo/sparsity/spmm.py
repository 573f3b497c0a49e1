"""Sparse inference of 1x1 convolutions (paper 17 of the zoo).

Elsen, Dukhan, Gale, Simonyan, "Fast Sparse ConvNets", CVPR 2020 (arXiv:1911.09723), Sec. 4: with the
activations in CHW layout a 1x1 convolution is the product of the sparse weight matrix W [C_out x C_in]
with the dense activations X [C_in x HW]; their kernel walks the nonzeros of each output channel's row
and accumulates whole rows of X (a strip of spatial positions at a time), so the work is proportional
to the nonzeros and the reads of X are contiguous.

`sparse_apply(model, variables, x, sparse)` runs any zoo model with every 1x1, stride-1, ungrouped
`nn.Conv` whose kernel is in `sparse` (from `to_sparse(params)`) computed sparsely, by intercepting the
convolution calls (`flax.linen.intercept_methods`); everything else runs as usual. Implementations:
  'scipy'  host CSR (scipy.sparse `csr_matrix @ dense`, the row-by-row axpy of the paper's kernel) of
           W^T called through `jax.pure_callback`: the fastest on this x86 CPU (benchmarks/sparse_conv.py);
  'bcoo'   `jax.experimental.sparse` BCOO, inside XLA (gather/scatter-based on CPU);
  'ell'    an XLA gather formulation: each output channel's nonzeros padded to the row maximum (ELLPACK),
           Y[o] = sum_k V[o, k] X[I[o, k]].
All give the dense masked model's outputs to float32 rounding.
"""
from typing import Any, Dict, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse

from inception_zoo.errors import UserError
from inception_zoo.pytree import path_str

IMPLEMENTATIONS = ("scipy", "bcoo", "ell")


class SparseKernel(NamedTuple):
  """One 1x1 kernel: W^T in CSR [C_out x C_in] on the host, and its ELL / BCOO forms for XLA."""
  csr: scipy.sparse.csr_matrix
  ell_values: np.ndarray   # [C_out, K] nonzeros per output channel, zero-padded to K = the row maximum
  ell_index: np.ndarray    # [C_out, K] their input channels (padding points at channel 0 with value 0)
  density: float


def to_sparse(params, min_sparsity: float = 0.0) -> Dict[str, SparseKernel]:
  """{module path: SparseKernel} for every (1, 1, C_in, C_out) kernel at least `min_sparsity` zero
  (less sparse kernels are faster dense)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_str(path)
    if not name.endswith("/kernel") or leaf.ndim != 4 or leaf.shape[:2] != (1, 1):
      continue
    w = np.asarray(leaf, np.float32)[0, 0].T  # [C_out, C_in]
    density = float(np.count_nonzero(w)) / w.size
    if 1.0 - density < min_sparsity:
      continue
    csr = scipy.sparse.csr_matrix(w)
    k = max(int(np.diff(csr.indptr).max()), 1)
    values, index = np.zeros((w.shape[0], k), np.float32), np.zeros((w.shape[0], k), np.int32)
    for o in range(w.shape[0]):
      lo, hi = csr.indptr[o], csr.indptr[o + 1]
      values[o, :hi - lo], index[o, :hi - lo] = csr.data[lo:hi], csr.indices[lo:hi]
    out[name[:-len("/kernel")]] = SparseKernel(csr, values, index, density)
  return out


def spmm(kernel: SparseKernel, x: jax.Array, impl: str) -> jax.Array:
  """x [..., C_in] -> [..., C_out] through the sparse kernel."""
  lead, c_in = x.shape[:-1], x.shape[-1]
  c_out = kernel.csr.shape[0]
  if impl == "scipy":
    def host(a):  # CHW: W^T [C_out, C_in] @ X^T [C_in, positions]
      xt = np.ascontiguousarray(np.asarray(a, np.float32).reshape(-1, c_in).T)
      return np.ascontiguousarray((kernel.csr @ xt).T).reshape(*lead, c_out)
    return jax.pure_callback(host, jax.ShapeDtypeStruct((*lead, c_out), jnp.float32), x.astype(jnp.float32))
  x2 = x.reshape(-1, c_in).astype(jnp.float32)
  if impl == "bcoo":
    from jax.experimental import sparse
    w = sparse.BCOO.from_scipy_sparse(kernel.csr.T.tocoo())  # [C_in, C_out]
    y = x2 @ w
  elif impl == "ell":
    gathered = jnp.take(x2, jnp.asarray(kernel.ell_index), axis=1)  # [P, C_out, K]
    y = jnp.einsum("pok,ok->po", gathered, jnp.asarray(kernel.ell_values))
  else:
    raise UserError(f"unknown sparse implementation '{impl}' ({', '.join(IMPLEMENTATIONS)})")
  return y.reshape(*lead, c_out)


def _is_pointwise(conv: nn.Conv) -> bool:
  strides = conv.strides if conv.strides is not None else 1
  strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
  return (tuple(conv.kernel_size) == (1, 1) and strides == (1, 1) and conv.feature_group_count == 1
          and conv.input_dilation in (None, 1, (1, 1)) and conv.padding in ("SAME", "VALID", 0, ((0, 0), (0, 0))))


def sparse_apply(model: nn.Module, variables: Dict[str, Any], x: jax.Array,
                 sparse: Dict[str, SparseKernel], impl: str = "scipy"):
  """model.apply(variables, x, train=False) with the 1x1 convolutions in `sparse` computed sparsely."""
  if impl not in IMPLEMENTATIONS:
    raise UserError(f"unknown sparse implementation '{impl}' ({', '.join(IMPLEMENTATIONS)})")
  used = set()

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    name = "/".join(module.path)
    if context.method_name != "__call__" or not isinstance(module, nn.Conv) or name not in sparse:
      return next_fun(*args, **kwargs)
    if not _is_pointwise(module):
      raise UserError(f"{name} is not a 1x1 stride-1 ungrouped convolution; it cannot run as SpMM")
    used.add(name)
    (inputs,) = args
    y = spmm(sparse[name], inputs, impl)
    if module.use_bias:
      y = y + module.variables["params"]["bias"]
    return y.astype(module.dtype or inputs.dtype)

  with nn.intercept_methods(intercept):
    out = model.apply(variables, x, train=False)
  missing = set(sparse) - used
  if missing:
    raise UserError(f"sparse kernels of modules the model never called: {', '.join(sorted(missing))}")
  return out
