"""Full-batch optimisation: the loop of the small theory, graph and prototype papers, whose data fits in
one array (a graph, a simulated sample, unconstrained features) so there is no input pipeline.

`fit` scans `log_every` optimizer steps inside one compiled call (a Python loop of tiny steps is
dominated by dispatch on CPU), stops with a one-line error on a non-finite loss, and writes the
metrics through the same writer as the classification trainer.
"""
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from inception_zoo.metrics import MetricWriter, check_finite
from inception_zoo.train.state import apply_gradients

# loss_fn(params, key) -> loss, or (loss, {name: scalar}) with has_aux; loss_fn(params, key, step) with
# pass_step (a schedule inside the loss, e.g. a curriculum).
LossFn = Callable[..., Any]


def fit(loss_fn: LossFn, params, tx: optax.GradientTransformation, num_steps: int, *,
        key: Optional[jax.Array] = None, has_aux: bool = False, log_every: int = 100,
        writer: Optional[MetricWriter] = None, prefix: str = "train/", progress: bool = False,
        pass_step: bool = False) -> Tuple[Any, np.ndarray]:
  """Minimises `loss_fn` from `params` for `num_steps` steps of `tx`; returns (params, losses per step).

  `key` is split per step (dropout, sampled noise); `pass_step` also gives the loss the step index (0
  first, a traced int32); `writer` gets the loss and the auxiliary scalars of the last step of every
  chunk of `log_every` steps.
  """
  key = jax.random.key(0) if key is None else key
  grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)

  def one_step(carry, step):
    params, opt_state = carry
    out, grads = grad_fn(params, jax.random.fold_in(key, step), *((step,) if pass_step else ()))
    loss, aux = out if has_aux else (out, {})
    new, _ = apply_gradients({"params": params, "opt_state": opt_state}, grads, loss, tx)
    return (new["params"], new["opt_state"]), (loss, aux)

  @jax.jit
  def chunk(params, opt_state, steps):
    (params, opt_state), (losses, aux) = jax.lax.scan(one_step, (params, opt_state), steps)
    return params, opt_state, losses, jax.tree.map(lambda a: a[-1], aux)

  opt_state = tx.init(params)
  history = []
  bar = tqdm(total=num_steps, desc="fit", disable=not progress, leave=False)
  done = 0
  while done < num_steps:
    n = min(log_every, num_steps - done)
    new_params, new_opt_state, losses, aux = chunk(params, opt_state, jnp.arange(done, done + n))
    losses = np.asarray(losses)
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:  # keep the last good parameters; the error names the first bad step
      check_finite(done + int(bad[0]) + 1, float(losses[bad[0]]))
    params, opt_state = new_params, new_opt_state
    history.append(losses)
    done += n
    bar.update(n)
    if writer is not None:
      metrics: Dict[str, Any] = {"loss": losses[-1], **aux}
      writer.write(done, {prefix + k: v for k, v in metrics.items()})
  bar.close()
  return params, np.concatenate(history) if history else np.zeros((0,), np.float32)
