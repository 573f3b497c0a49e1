"""Checkpoints with Orbax.

- `Checkpoints(workdir)`: the training run's periodic/final saves (train state + JSON metadata with the
  input position), keep-N, and `restore_latest` which a trainer calls before anything else. A step
  that fails to restore (a save cut short on a filesystem without atomic renames, a damaged file) is
  skipped with a warning and the previous one is tried, so nothing saved before it is lost.
- `save_weights` / `load_weights`: params-only checkpoints (a converted timm model, another run's
  weights) that `config.init_from` loads into a fresh state, resetting the classifier when the number
  of classes differs.
"""
import json
import logging
import os
import time
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from inception_zoo.errors import UserError
from inception_zoo import sharding
from inception_zoo.pytree import path_str

WEIGHTS_META = "inception_zoo.json"
# Top-level modules that SimMIM pre-training adds to a Swin V2 encoder (projects/simmim/simmim.py); weights
# from such a run initialise a classifier without them.
PRETRAINING_ONLY = ("mask_token", "decoder")


def abstract_like(tree, shardings):
  """ShapeDtypeStructs with the target shardings: they tell Orbax how to lay a restore out, so a
  checkpoint written on one mesh restores onto another."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class Checkpoints:
  """Orbax CheckpointManager over `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int = 3, every_steps: int = 0):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.every_steps = every_steps
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def should_save(self, step: int) -> bool:
    return bool(self.every_steps) and step % self.every_steps == 0

  def save(self, step: int, state, meta: Dict[str, Any]):
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def restore_latest(self, abstract_state) -> Optional[Tuple[int, Any, Dict[str, Any]]]:
    """(step, state, meta) of the newest checkpoint that restores, or None for a fresh run."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return step, out["state"], dict(out["meta"])
      except Exception as e:  # a damaged step must not cost the ones before it
        aside = self._set_aside(step)
        logging.warning("checkpoint at step %d does not restore (%s); moved to %s, trying an older one",
                        step, str(e).splitlines()[0] if str(e) else type(e).__name__, aside)
    return None

  def _set_aside(self, step: int) -> str:
    """Renames a damaged step out of the manager's sight (kept for inspection, never deleted)."""
    src = os.path.join(self.directory, str(step))
    dst = f"{src}.damaged-{int(time.time())}"
    if jax.process_index() == 0:
      os.rename(src, dst)
    sharding.barrier(f"set aside checkpoint {step}")
    self.manager.reload()
    return dst

  def close(self):
    self.manager.close()


def save_weights(directory: str, variables: Dict[str, Any], meta: Dict[str, Any]):
  """Params-only checkpoint: `variables` = {'params': ..., 'batch_stats': ...} plus a JSON card."""
  directory = os.path.abspath(directory)
  if os.path.exists(os.path.join(directory, "variables")):
    raise UserError(f"{directory} already holds weights; choose another --out")
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.join(directory, "variables"), variables)
  ckptr.wait_until_finished()
  if jax.process_index() == 0:
    with open(os.path.join(directory, WEIGHTS_META), "w") as f:
      json.dump(meta, f, indent=2)


def load_weights(directory: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """(variables as numpy arrays, card) for `init_from`, or a one-line error naming the problem.

  `directory` is either a `save_weights` directory (e.g. from inception_zoo.convert) or another run's
  workdir, whose newest checkpoint gives its evaluated weights (the parameter EMA when it had one).
  """
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise UserError(f"weights directory {directory} does not exist")
  run = os.path.join(directory, "checkpoints")
  if os.path.isdir(run):
    steps = sorted((int(d) for d in os.listdir(run) if d.isdigit()), reverse=True)
    if not steps:
      raise UserError(f"{run} holds no finished checkpoint")
    state = restore_numpy(os.path.join(run, str(steps[0]), "state"))
    return ({"params": state["ema_params"], "batch_stats": state["batch_stats"]},
            {"source": f"run:{directory}", "step": steps[0]})
  path = os.path.join(directory, "variables")
  if not os.path.isdir(path):
    raise UserError(f"{directory} holds no weights (expected {path} from inception_zoo.convert, "
                    f"or a run's checkpoints/)")
  card = {}
  if os.path.exists(os.path.join(directory, WEIGHTS_META)):
    with open(os.path.join(directory, WEIGHTS_META)) as f:
      card = json.load(f)
  return restore_numpy(path), card


def take_scope(variables: Dict[str, Any], scope: str, source: str) -> Dict[str, Any]:
  """The top-level submodule `scope` of every collection (e.g. the 'student' of a distillation run)."""
  if scope not in variables.get("params", {}):
    raise UserError(f"weights in {source} have no submodule '{scope}' (they have "
                    f"{', '.join(sorted(variables.get('params', {}))) or 'none'})")
  return {k: v[scope] for k, v in variables.items() if scope in v}


def restore_numpy(path: str) -> Dict[str, Any]:
  """Any Orbax pytree checkpoint, whatever mesh wrote it, as numpy arrays on this host."""
  try:
    ckptr = ocp.StandardCheckpointer()
    meta_tree = ckptr.metadata(path).item_metadata
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), meta_tree)
    return jax.tree.map(np.asarray, ckptr.restore(path, target))
  except Exception as e:
    raise UserError(f"cannot read the checkpoint in {path}: {str(e).splitlines()[0]}")


def _top_module(name: str) -> str:
  """'params/decoder/kernel' -> 'decoder'."""
  return name.split("/")[1] if "/" in name else name


def merge_weights(fresh: Dict[str, Any], loaded: Dict[str, Any], head: str,
                  drop: Tuple[str, ...] = PRETRAINING_ONLY) -> Tuple[Dict[str, Any], list]:
  """`fresh` variables with every leaf replaced by the loaded one of the same path and shape.

  Leaves under the module named `head` that are missing (a SimMIM encoder has no classifier) or
  differ in shape (another number of classes) keep their fresh initialisation. Loaded top-level
  modules named in `drop` (what pre-training adds: SimMIM's mask token and decoder) are left out;
  any other missing, extra or mis-shaped leaf is an error. Returns (merged, reset paths).
  """
  flat = {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
  wanted = {path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(fresh)[0]}
  unused = [n for n in flat if n not in wanted]
  extra = [n for n in unused if _top_module(n) not in drop]
  if extra:
    raise UserError(f"loaded weights have '{extra[0]}', which the model lacks (were they made for "
                    f"another model?)")
  dropped = sorted({_top_module(n) for n in unused})
  if dropped:
    logging.info("loaded weights: left out the pre-training modules %s", ", ".join(dropped))
  reset = []

  def take(path, x):
    name = path_str(path)
    under_head = f"/{head}/" in f"/{name}"
    if name not in flat:
      if under_head:
        reset.append(name)
        return x
      raise UserError(f"loaded weights have no '{name}' (were they made for another model?)")
    y = flat[name]
    if tuple(y.shape) == tuple(x.shape):
      return np.asarray(y, dtype=x.dtype)
    if under_head:
      reset.append(name)
      return x
    raise UserError(f"loaded '{name}' has shape {tuple(y.shape)}, the model needs {tuple(x.shape)}")

  return jax.tree_util.tree_map_with_path(take, fresh), reset
