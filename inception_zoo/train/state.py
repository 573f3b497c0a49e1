"""Train state and the pieces every trainer shares: sharded init, resume, pretrained init, batches.

The state is a pytree with no Python-side state: the per-step random key is derived from the state's
key and the step, and the input position is the step, so a checkpoint of this state is a full resume.
The seed enters only as data (the initial key), so runs that differ in seed share compiled code.
"""
import functools
import logging
import signal
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from inception_zoo import ckpt, sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any  # the parameters' exponential moving average; same as params when EMA is off
  rng: jax.Array   # raw key data (uint32) for dropout and other per-step randomness


def make_init(model: nn.Module, tx: optax.GradientTransformation,
              image_shape: Tuple[int, ...]) -> Callable[[jax.Array], TrainState]:
  """The function rng -> initial TrainState (jit it, or `jax.eval_shape` it for shapes only)."""

  def init(rng):
    variables = model.init({"params": rng, "dropout": rng}, jnp.zeros((1, *image_shape)), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      ema_params=params, rng=jax.random.key_data(jax.random.fold_in(rng, 1)))

  return init


def init_state(model: nn.Module, tx: optax.GradientTransformation, image_shape: Tuple[int, ...],
               mesh: jax.sharding.Mesh, rules, seed: int,
               fsdp_min_size: int = 2 ** 14) -> Tuple[TrainState, Any]:
  """Initialises the state directly in its sharded layout: shapes first (`eval_shape`), then a jitted
  init whose `out_shardings` place every leaf, so no device ever holds the whole model unless the
  rules replicate it. Returns (state, shardings)."""
  init, rng = make_init(model, tx, image_shape), jax.random.key(seed)
  shardings = sharding.infer_shardings(jax.eval_shape(init, rng), mesh, rules, fsdp_min_size)
  return jax.jit(init, out_shardings=shardings)(rng), shardings


def step_rng(state: TrainState) -> jax.Array:
  return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def ema_update(ema, params, step, decay: float):
  """TF's ExponentialMovingAverage with num_updates: the decay ramps up as (1 + t) / (10 + t)."""
  if not decay:
    return params
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)


def apply_gradients(state, grads, loss, tx: optax.GradientTransformation, *,
                    finish: Optional[Callable[[Any], Any]] = None, params: str = "params",
                    opt_state: str = "opt_state"):
  """The end of every train step: `tx`'s update of `state.params` (and `state.opt_state`; fields or
  dict keys of those names), then `finish(new state)` (step count, EMA, batch statistics), guarded:
  when the loss or the gradients are not finite the state comes back exactly as it was, so nothing
  past a NaN step is ever saved (the loop stops there, `metrics.check_finite`). Returns (state, grad norm)."""
  get = state.get if isinstance(state, dict) else functools.partial(getattr, state)
  updates, new_opt_state = tx.update(grads, get(opt_state), get(params))
  fields = {params: optax.apply_updates(get(params), updates), opt_state: new_opt_state}
  new = {**state, **fields} if isinstance(state, dict) else state.replace(**fields)
  new = finish(new) if finish else new
  grad_norm = optax.tree.norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  # One conditional over the whole state compiles far faster than a select per leaf.
  return jax.lax.cond(ok, lambda: new, lambda: state), grad_norm


def restore_or_init(config: ml_collections.ConfigDict, model: nn.Module,
                    tx: optax.GradientTransformation, image_shape: Tuple[int, ...],
                    mesh: jax.sharding.Mesh, checkpoints, head: str,
                    init_scope: Optional[str] = None,
                    drop: Tuple[str, ...] = ()) -> Tuple[TrainState, Any, Dict[str, Any]]:
  """The workdir's newest checkpoint before anything else; else a fresh state, with `config.init_from`
  weights when given. Returns (state, shardings, meta); meta is {} for a fresh run.

  `init_scope` names the submodule the weights are for (a distillation's student inside the model that
  also holds its discriminator; a detector's `backbone/body` for a classifier's ImageNet weights, whose
  own classifier `drop` names); the rest keeps its fresh initialisation.
  `config.init_from_scope` is the other direction: the submodule of the loaded weights to take (the
  student of a distillation run, to start a plain classifier from it).

  Shapes and shardings come from `eval_shape`, so a resume never compiles or runs the init.
  """
  init, rng = make_init(model, tx, image_shape), jax.random.key(config.seed)
  abstract = jax.eval_shape(init, rng)
  shardings = sharding.infer_shardings(abstract, mesh, config.sharding_rules, config.fsdp_min_size)
  restored = checkpoints.restore_latest(ckpt.abstract_like(abstract, shardings))
  if restored is not None:
    step, state, meta = restored
    logging.info("resumed from step %d", step)
    return state, shardings, meta
  state = jax.jit(init, out_shardings=shardings)(rng)
  if config.get("init_from"):
    loaded, _ = ckpt.load_weights(config.init_from)
    if config.get("init_from_scope"):
      loaded = ckpt.take_scope(loaded, config.init_from_scope, config.init_from)
    fresh = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    scope = init_scope.split("/") if init_scope else []
    part = {k: _subtree(v, scope) for k, v in fresh.items()}
    merged, reset = ckpt.merge_weights(part, loaded, head, drop=ckpt.PRETRAINING_ONLY + tuple(drop))
    if reset:
      logging.info("init_from %s: classifier reset (%s)", config.init_from, ", ".join(reset))
    merged = {k: _replace_subtree(v, scope, merged[k]) for k, v in fresh.items()}
    merged = jax.device_put(merged, {"params": shardings.params, "batch_stats": shardings.batch_stats})
    # The optimizer state stays freshly initialised: its moments start from zero for new weights.
    state = state.replace(params=merged["params"], batch_stats=merged["batch_stats"],
                          ema_params=jax.tree.map(jnp.copy, merged["params"]))  # own buffers: donated
  return state, shardings, {}


def _subtree(tree: Dict[str, Any], scope) -> Dict[str, Any]:
  for name in scope:
    tree = tree.get(name, {})
  return tree


def _replace_subtree(tree: Dict[str, Any], scope, value) -> Dict[str, Any]:
  """`tree` with the subtree at `scope` (a list of names) replaced by `value`, where the tree has it."""
  if not scope:
    return value
  head, *rest = scope
  if head not in tree:  # a collection without this submodule (no batch statistics in it)
    return tree
  return {**tree, head: _replace_subtree(tree[head], rest, value)}


def calibrate_batch_stats(model: nn.Module, variables: Dict[str, Any], x: jax.Array) -> Dict[str, Any]:
  """BN running statistics := the batch statistics of `x` (one train-mode pass with momentum 0)."""
  _, updates = model.clone(bn_momentum=0.0).apply(variables, x, train=True, mutable=["batch_stats"])
  return {**variables, "batch_stats": updates["batch_stats"]}


def global_batch(mesh: jax.sharding.Mesh, local: Dict[str, np.ndarray]) -> Dict[str, jax.Array]:
  """This process's rows -> global arrays split over the mesh's data axes."""
  return {k: jax.make_array_from_process_local_data(
      jax.sharding.NamedSharding(mesh, sharding.batch_spec(mesh, np.ndim(v))), np.asarray(v))
          for k, v in local.items()}


class Preemption:
  """Notices SIGTERM (a pre-empted VM, a cluster's time limit) so the loop can save and stop.

  One process: a Python handler records it. Several: JAX's preemption service (started by
  `jax.distributed.initialize`, which catches SIGTERM itself) agrees through the coordination service
  on a step at which every host saves. A device collective for this would race the dispatched train
  step's collectives and can deadlock CPU (gloo) runs."""

  def __init__(self):
    self.requested = False
    self._previous: Optional[Callable] = None
    self._local = jax.process_count() == 1

  def __enter__(self):
    if self._local:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def agreed(self, step: int) -> bool:
    """Whether to save and stop at `step`; multi-process runs must ask at every step."""
    if self._local:
      return self.requested
    return multihost_utils.reached_preemption_sync_point(step)

  def __exit__(self, *exc):
    if self._local:
      signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)
