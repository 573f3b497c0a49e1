"""Meshes and parameter sharding rules, named in the config and never in a module.

A config names the mesh (`config.mesh = {'data': -1, 'fsdp': 1}`; -1 takes the remaining devices) and
a list of rules `(regex, spec)` matched against each state leaf's path, e.g.
`params/features/layers_9/branch0/conv/kernel` or `opt_state/1/0/mu/features/.../kernel` (optimizer
moments follow their parameter because the parameter path is part of theirs). The first matching rule
wins. A spec is

- `'replicate'`: a full copy on every device;
- `'fsdp'`: split the largest dimension that the `fsdp` axis divides (when the leaf has at least
  `fsdp_min_size` elements; smaller leaves are replicated, as their all-gathers cost more than they save);
- a tuple of mesh axis names / None per dimension, e.g. `(None, None, None, 'model')`.

The batch is split over every data-like axis (`data` and `fsdp`), so FSDP is data parallelism whose
parameters and optimizer state are stored in slices and gathered by XLA when used.

`python -m inception_zoo.tools.sharding_plan --experiment=NAME` prints the layout an experiment's
config gives every leaf (inception_zoo/tools/sharding_plan.py).
"""
import re
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

import jax
import numpy as np
from orbax.checkpoint import multihost
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from inception_zoo.errors import UserError
from inception_zoo.pytree import path_str

DATA_AXES = ("data", "fsdp")

# Data parallelism everywhere; FSDP slices any leaf of at least 2^14 elements over the `fsdp` axis
# (a no-op while that axis has size 1). The conv nets' rule set.
DEFAULT_RULES = ((".*", "fsdp"),)

# Transformers (Swin V2, iFormer): Megatron-style tensor parallelism over a `model` axis (Shoeybi et
# al. 2019). The attention's qkv and the MLP's first layer are split by output (heads, hidden units),
# the output projections by input, so each block needs one all-reduce per half; their other dimension
# is sliced over `fsdp` (a no-op at size 1), and FSDP takes everything else.
TENSOR_PARALLEL_RULES = (
    (r".*/attn/qkv/kernel", ("fsdp", "model")),
    (r".*/attn/proj/kernel", ("model", "fsdp")),
    (r".*/mlp/fc1/kernel", ("fsdp", "model")),
    (r".*/mlp/fc1/bias", ("model",)),
    (r".*/mlp/fc2/kernel", ("model", "fsdp")),
    (".*", "fsdp"),
)


def barrier(name: str, timeout_s: int = 3600):
  """Blocks until every process reaches `name` (unique per run); a no-op in one process.

  Goes through the coordination service rather than a device collective: CPU (gloo) collectives give
  up after 30 s, less than one host's compile can lag another's."""
  multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_s * 1000)


def compile_together(jitted: Callable, name: str) -> Callable:
  """`jitted`, compiled at its first call, after which every process waits for the others; so they
  enter its first collective together whatever their compile times (or compile-cache hits)."""
  compiled = None

  def call(*args):
    nonlocal compiled
    if compiled is None:
      compiled = jitted.lower(*args).compile()
      barrier(f"compiled {name}")
    return compiled(*args)

  return call


def make_mesh(axes: Dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh with the named axis sizes; one axis may be -1 to take the remaining devices.

  Without -1, a mesh smaller than the machine uses its first devices (single-process only).
  """
  devices = list(devices if devices is not None else jax.devices())
  names, sizes = list(axes.keys()), list(axes.values())
  if sizes.count(-1) > 1:
    raise UserError(f"mesh {dict(axes)}: at most one axis may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise UserError(f"mesh {dict(axes)} does not divide {len(devices)} devices")
    sizes[sizes.index(-1)] = len(devices) // known
  need = int(np.prod(sizes))
  if need > len(devices) or need < len(devices) and jax.process_count() > 1:
    raise UserError(f"mesh {dict(zip(names, sizes))} needs {need} devices; "
                    f"{len(devices)} are available")
  devices = devices[:need]  # a smaller mesh uses the first devices (e.g. a 1-device run)
  # Auto axes: shardings are given at jit boundaries and XLA propagates them inside the step.
  return jax.make_mesh(tuple(sizes), tuple(names), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(names))


def batch_spec(mesh: Mesh, ndim: int = 1) -> P:
  axes = tuple(a for a in DATA_AXES if a in mesh.axis_names)
  return P(axes, *([None] * (ndim - 1)))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, batch_spec(mesh))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: Tuple[int, ...], mesh: Mesh, min_size: int) -> P:
  n = mesh.shape.get("fsdp", 1)
  if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % n == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def _explicit_spec(path: str, shape, spec: Sequence[Any], mesh: Mesh, pattern: str) -> P:
  if len(spec) != len(shape):
    raise UserError(f"sharding rule '{pattern}' gives {len(spec)} dims for '{path}' of shape {shape}")
  for dim, axis in zip(shape, spec):
    axes = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
    for a in axes:
      if a not in mesh.axis_names:
        raise UserError(f"sharding rule '{pattern}' names mesh axis '{a}'; the mesh has "
                        f"{mesh.axis_names}")
    size = int(np.prod([mesh.shape[a] for a in axes]))
    if dim % size:
      raise UserError(f"sharding rule '{pattern}': dimension {dim} of '{path}' {tuple(shape)} "
                      f"does not divide over {axes} ({size} devices)")
  return P(*spec)


def infer_shardings(tree: Any, mesh: Mesh, rules: Iterable[Tuple[str, Any]] = DEFAULT_RULES,
                    fsdp_min_size: int = 2 ** 14) -> Any:
  """NamedSharding for every leaf of `tree` (arrays or ShapeDtypeStructs) from the first matching rule.

  Raises a one-line UserError for a rule that matches no leaf, a leaf no rule matches, an axis the
  mesh lacks, or a dimension that does not divide.
  """
  rules = [(re.compile(pattern), pattern, spec) for pattern, spec in rules]
  used = set()

  def one(path, leaf):
    name, shape = path_str(path), tuple(getattr(leaf, "shape", ()))
    for regex, pattern, spec in rules:
      if regex.fullmatch(name):
        used.add(pattern)
        if spec == "replicate" or not shape:
          return NamedSharding(mesh, P())
        if spec == "fsdp":
          return NamedSharding(mesh, _fsdp_spec(shape, mesh, fsdp_min_size))
        return NamedSharding(mesh, _explicit_spec(name, shape, spec, mesh, pattern))
    raise UserError(f"no sharding rule matches '{name}'; add a catch-all rule such as ('.*', 'replicate')")

  out = jax.tree_util.tree_map_with_path(one, tree)
  unused = [pattern for _, pattern, _ in rules if pattern not in used]
  if unused:
    raise UserError(f"sharding rule '{unused[0]}' matches no parameter or optimizer-state path")
  return out


def describe(tree: Any, shardings: Any) -> List[Tuple[str, Tuple[int, ...], str, int]]:
  """(path, shape, spec, bytes per device) for every leaf, for the printed sharding table."""
  rows = []
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for (path, leaf), sh in zip(leaves, jax.tree.leaves(shardings)):
    shard = sh.shard_shape(leaf.shape)
    nbytes = int(np.prod(shard, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    rows.append((path_str(path), tuple(leaf.shape), str(sh.spec), nbytes))
  return rows


def format_table(rows) -> str:
  width = max(len(r[0]) for r in rows)
  lines = [f"{'path':<{width}}  {'shape':<22} {'spec':<28} bytes/device"]
  lines += [f"{p:<{width}}  {str(s):<22} {sp:<28} {b:,}" for p, s, sp, b in rows]
  lines.append(f"total bytes per device: {sum(r[3] for r in rows):,}")
  return "\n".join(lines)
