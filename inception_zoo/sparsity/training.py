"""Sparse training with the masks in the optimizer state (papers 16 and 17 of the zoo).

As Google's jaxpruner does (`jaxpruner.base_updater.BaseUpdater.wrap_optax`), `sparsify(tx, ...)` wraps
any optax transformation; its state holds one boolean mask per parameter, so the shared training loop,
checkpoints (the masks are saved and resumed with the rest of opt_state) and sharding see an ordinary
optimizer. Each update
  1. zeroes the gradients of pruned weights, so momentum and Adam moments never build up there;
  2. runs the wrapped optimizer;
  3. for gradual magnitude pruning, recomputes the masks from the new weights at the schedule's steps;
  4. returns updates after which every pruned weight is exactly zero: -w where the mask is off
     (w + (-w) == 0 in floating point), the wrapped update where it is on.

The optimizer's init only sees the parameters, so it cannot zero them: `sparse_task(task)` wraps a
trainer's Task so that its optimizer is sparsified and every train and eval step applies the state's
masks to the parameters (and their EMA) before the forward pass, whenever config.sparsity prunes; the
generic trainer knows nothing of sparsity. The very first forward pass therefore already sees the
sparse network; after the first update the masking is a no-op on weights that are zero anyway.

`config.sparsity` (absent or method '' = dense):
  method        'uniform' | 'er' | 'erk': random masks drawn once and fixed (Liu et al. 2022);
                'magnitude': gradual magnitude pruning (Zhu & Gupta 2018, as Elsen et al. 2020);
  sparsity      target fraction of zeros among the prunable parameters (final sparsity for magnitude);
  include       regex on parameter paths of the prunable kernels (conv and dense: '.*kernel');
  exclude       regex searched in those paths for kernels to keep dense ('' = none);
  initial_sparsity, begin_step, end_step, frequency   the cubic schedule (magnitude only; steps of
                training: the update that follows step t prunes when t is a pruning step).
The random masks' key is derived from config.seed.
"""
import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception_zoo.errors import UserError
from inception_zoo.sparsity import gradual, masks as masks_lib

MASK_KEY_SALT = 0x5EED  # the masks' key: fold_in(key(config.seed), this), apart from init's own key


class SparsityState(NamedTuple):
  count: jax.Array  # updates done so far (= the train step the next update follows)
  masks: Any        # a boolean tree like params: True = kept
  inner: optax.OptState


def apply_masks(tree, masks):
  return jax.tree.map(lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), tree, masks)


def sparsify(tx: optax.GradientTransformation, init_masks: Callable[[Any], Any],
             update_masks: Optional[Callable[[jax.Array, Any, Any], Any]] = None
             ) -> optax.GradientTransformation:
  """`tx` training only the unmasked weights. init_masks(params) -> masks; update_masks(step, new
  params, masks) -> masks, called at every update (None: masks fixed)."""

  def init(params):
    return SparsityState(jnp.zeros([], jnp.int32), init_masks(params), tx.init(params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("sparsify needs the parameters in update(): pruned weights are set to zero")
    updates, inner = tx.update(apply_masks(updates, state.masks), state.inner, params)
    new_masks = state.masks
    if update_masks is not None:
      new_masks = update_masks(state.count, optax.apply_updates(params, updates), state.masks)
    updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, new_masks)
    return updates, SparsityState(state.count + 1, new_masks, inner)

  return optax.GradientTransformation(init, update)


def magnitude_updater(sparsity: float, initial: float, begin_step: int, end_step: int, frequency: int,
                      include: str, exclude: str):
  """update_masks for gradual magnitude pruning: at a pruning step, each prunable layer keeps its
  largest weights at the schedule's sparsity (weights already pruned are zero, so they stay pruned)."""
  gradual.check_schedule(initial, sparsity, begin_step, end_step, frequency)

  def update_masks(step, params, masks):
    names = masks_lib.prunable_paths(params, include, exclude)
    if not names:
      raise UserError("no prunable parameters (check sparsity.include / exclude)")
    s = gradual.cubic_sparsity(step, initial, sparsity, begin_step, end_step)

    def prune():
      return masks_lib.map_prunable(lambda w, m: gradual.magnitude_mask(jnp.where(m, w, 0), s) & m,
                                    params, masks, names)

    return jax.lax.cond(gradual.is_pruning_step(step, begin_step, end_step, frequency), prune,
                        lambda: masks)

  return update_masks


def from_config(tx: optax.GradientTransformation, config: ml_collections.ConfigDict
                ) -> optax.GradientTransformation:
  """`tx` itself when config.sparsity is absent or its method empty; else `tx` sparsified."""
  sp = config.get("sparsity")
  method = sp.get("method", "") if sp else ""
  if not method:
    return tx
  include, exclude = sp.get("include", r".*kernel"), sp.get("exclude", "")
  if method in masks_lib.METHODS:
    key = jax.random.fold_in(jax.random.key(config.get("seed", 0)), MASK_KEY_SALT)
    return sparsify(tx, lambda p: masks_lib.random_masks(key, p, sp.sparsity, method, include, exclude))
  if method == "magnitude":
    updater = magnitude_updater(sp.sparsity, sp.get("initial_sparsity", 0.0), sp.begin_step, sp.end_step,
                                sp.get("frequency", 1), include, exclude)
    return sparsify(tx, lambda p: jax.tree.map(lambda x: jnp.ones(x.shape, bool), p), updater)
  raise UserError(f"unknown sparsity method '{method}' ({', '.join(masks_lib.METHODS)}, magnitude)")


def find_masks(opt_state) -> Optional[Any]:
  """The masks in an optimizer state (None for a dense optimizer)."""
  if isinstance(opt_state, SparsityState):
    return opt_state.masks
  return None


def mask_state(state):
  """A TrainState with its parameters (and their EMA) zero where its optimizer's masks are off."""
  m = find_masks(state.opt_state)
  if m is None:
    return state
  return state.replace(params=apply_masks(state.params, m), ema_params=apply_masks(state.ema_params, m))


def prunes(config: ml_collections.ConfigDict) -> bool:
  sp = config.get("sparsity")
  return bool(sp and sp.get("method"))


def sparse_task(task):
  """`task` (a classification.Task) trained sparse when config.sparsity prunes: its optimizer wrapped
  by `from_config`, and its train and eval steps given the masked parameters; a dense config (no
  method) trains exactly as `task` does."""

  def masked(step, config):
    return (lambda state, *args: step(mask_state(state), *args)) if prunes(config) else step

  return dataclasses.replace(
      task, wrap_optimizer=lambda tx, config: from_config(task.optimizer(tx, config), config),
      make_train_step=lambda model, tx, schedule, config: masked(
          task.make_train_step(model, tx, schedule, config), config),
      make_eval_step=lambda model, config: masked(task.make_eval_step(model, config), config))
