"""The step loop every trainer shares, and resume for a train state of any shape.

`run_steps` drives a jitted step from the step after the restored one to the last: it overlaps the
host's bookkeeping with the dispatched step, stops at the first non-finite loss or gradient norm
(`metrics.check_finite`), writes averaged train metrics every `log_every` steps, evaluates every
`eval_every` steps and at the end, saves checkpoints (every `checkpoints.every_steps`, at the end, and on
pre-emption, then exits), and shows a progress bar. The classification trainer runs on it
(train/classification.py), and so does every trainer whose state is not a `TrainState` (PixPro's
momentum encoder, a GAN's two players, images being optimised): `restore_or_start` gives them the
workdir's newest checkpoint of their own pytree, or a fresh one.

Resume is exact when the step's randomness and its batch are functions of the step, never of Python
state: a state carries its key (`state.step_rng`), and `batches(start)` starts at the restored step.
`meta(step)` records what the input position depends on; `check_same_input` refuses to resume a
workdir with a different seed or batch size, which would change the examples that come next.
`Run` is the harness of one run in one directory (restore or start, check, loop, close); every
trainer goes through it, `run_in_workdir` is it for a state that starts as `init()`, and `train_setup`
for the trainers built around a `Setup` (classification, detection, segmentation).
"""
import logging
import sys
import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import jax
import ml_collections
import tqdm

from inception_zoo import ckpt, sharding
from inception_zoo.data import pipeline
from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter, check_finite
from inception_zoo.train.state import Preemption, global_batch


def input_meta(config: ml_collections.ConfigDict, step: int, **what) -> Dict[str, Any]:
  """The JSON saved beside a checkpoint: the input position and what it depends on, and the config."""
  return {"input": {**what, "next_batch": step}, "config": config.to_dict()}


def check_same_input(meta: Dict[str, Any], workdir: str, **now):
  """Refuses to resume `workdir` when a setting the input order depends on has changed."""
  for key, value in now.items():
    before = meta.get("input", {}).get(key, value)
    if before != value:
      raise UserError(f"{workdir} was trained with {key} {before}; resuming with {value} would change "
                      f"which examples come next (use a new workdir)")


def restore_or_start(checkpoints: ckpt.Checkpoints, init: Callable[[], Any],
                     shardings: Optional[Any] = None) -> Tuple[Any, Dict[str, Any]]:
  """(state, meta): the newest checkpoint in `checkpoints` that restores, else `init()` and {}.

  `init` is traced for shapes first, so a resume never runs it. `shardings` (a matching pytree) lays
  the state out; by default every leaf is on the first local device."""
  abstract = jax.eval_shape(init)
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  restored = checkpoints.restore_latest(ckpt.abstract_like(abstract, shardings))
  if restored is not None:
    _, state, meta = restored
    return state, meta
  return jax.device_put(init(), shardings), {}


def run_steps(state, train_step: Callable, batches: Iterator, *, start: int, total_steps: int,
              checkpoints: ckpt.Checkpoints, writer: MetricWriter, meta: Callable[[int], Dict[str, Any]],
              evaluate: Callable[[Any], Dict[str, float]], log_every: int, eval_every: int = 0,
              desc: str = "train", extra: tuple = ()) -> Tuple[Any, Dict[str, float]]:
  """Runs `state, metrics = train_step(state, next(batches), *extra)` for steps start+1..total_steps.

  `metrics` holds 'loss' (and optionally 'grad_norm'); their means over each `log_every` steps go to
  `writer` as 'train/<name>'. `evaluate(state)` returns the metrics written at its steps. Returns the
  final state and the last evaluation ({} when no step ran)."""
  main = jax.process_index() == 0
  bar = tqdm.tqdm(total=total_steps, initial=start, disable=not main, unit="step", dynamic_ncols=True,
                  mininterval=0.5 if sys.stderr.isatty() else 30, desc=desc, file=sys.stderr)
  sums: Dict[str, float] = {}
  pending, count, t_log = [], 0, time.time()
  result: Dict[str, float] = {}

  def settle():
    """Waits for the dispatched steps, stops at the first non-finite loss, accumulates metrics."""
    nonlocal count
    for step, metrics in pending:
      metrics = jax.device_get(metrics)
      check_finite(step, float(metrics["loss"]), float(metrics.get("grad_norm", 0.0)))
      for k, v in metrics.items():
        sums[k] = sums.get(k, 0.0) + float(v)
      count += 1
      bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", refresh=False)
    pending.clear()

  with Preemption() as preemption:
    for step in range(start + 1, total_steps + 1):
      state, metrics = train_step(state, next(batches), *extra)
      settle()  # the previous step, while this one runs
      pending.append((step, metrics))
      bar.update(1)
      last = step == total_steps
      log = step % log_every == 0 or last
      evaluate_now = (eval_every and step % eval_every == 0) or last
      preempted = preemption.agreed(step)
      save = checkpoints.should_save(step) or last or preempted
      if log or evaluate_now or save:
        settle()  # nothing is logged or saved past a non-finite step
      if log and count:
        row = {f"train/{k}": v / count for k, v in sums.items()}
        row["train/steps_per_sec"] = count / (time.time() - t_log)
        writer.write(step, row)
        sums, count, t_log = {}, 0, time.time()
      if evaluate_now:
        result = evaluate(state)
        writer.write(step, result)
        if main:
          bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
      if save:
        checkpoints.save(step, state, meta(step))
      if preempted:
        bar.close()
        raise SystemExit(f"pre-empted (SIGTERM) at step {step}; checkpoint saved in "
                         f"{checkpoints.directory}; run the same command to resume")
  bar.close()
  return state, result


class Run:
  """The harness of one resumable run in `workdir`: its checkpoints and metric writer, closed on exit
  (also when a step fails). Every trainer on the step loop goes through it:

    with loop.Run(workdir, config, keep=3, checkpoint_every=1000) as run:
      state, meta = loop.restore_or_start(run.checkpoints, init)   # or the trainer's own restore
      start = run.resume(meta, seed=config.seed, global_batch=64)  # refuses a changed input order
      state, result = run.steps(state, train_step, batches(start), total_steps=..., evaluate=...)
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict, *, keep: int = 3,
               checkpoint_every: int = 0, tensorboard: bool = False):
    self.workdir, self.config = workdir, config
    self.checkpoints = ckpt.Checkpoints(workdir, keep=keep, every_steps=checkpoint_every)
    self.writer = MetricWriter(workdir, tensorboard=tensorboard)
    self.start, self.settings = 0, {}

  def __enter__(self) -> "Run":
    return self

  def __exit__(self, *exc):
    self.checkpoints.close()
    self.writer.close()

  def resume(self, meta: Dict[str, Any], **settings) -> int:
    """The step to continue from, given the restored checkpoint's `meta` ({} for a fresh start), after
    checking that `settings` (what the input order depends on: seed, batch size, ...) are unchanged."""
    check_same_input(meta, self.workdir, **settings)
    self.settings, self.start = settings, meta.get("input", {}).get("next_batch", 0)
    self.writer.write_config(self.config)
    return self.start

  def steps(self, state, train_step: Callable, batches: Iterator, *, total_steps: int,
            evaluate: Callable[[Any], Dict[str, float]], log_every: int, eval_every: int = 0,
            desc: str = "train", extra: tuple = ()) -> Tuple[Any, Dict[str, float]]:
    """`run_steps` from the resumed step to `total_steps`; returns (state, last evaluation), the
    restored state's evaluation when the run was already done."""
    state, result = run_steps(state, train_step, batches, start=self.start, total_steps=total_steps,
                              checkpoints=self.checkpoints, writer=self.writer,
                              meta=lambda step: input_meta(self.config, step, **self.settings), evaluate=evaluate,
                              log_every=log_every, eval_every=eval_every, desc=desc, extra=extra)
    return state, result or evaluate(state)


def run_in_workdir(workdir: str, init: Callable[[], Any], train_step: Callable,
                   batches: Callable[[int], Iterator], *, config: ml_collections.ConfigDict,
                   total_steps: int, settings: Dict[str, Any], evaluate: Callable[[Any], Dict[str, float]],
                   log_every: int, eval_every: int = 0, checkpoint_every: int = 0, keep: int = 3,
                   shardings: Optional[Any] = None, desc: str = "train",
                   extra: tuple = ()) -> Tuple[Any, Dict[str, float]]:
  """`Run` for a state that starts as `init()`: the workdir's newest checkpoint or `init()`, then
  `batches(start)` (the batches of steps start+1, ...) up to `total_steps`."""
  with Run(workdir, config, keep=keep, checkpoint_every=checkpoint_every) as run:
    state, meta = restore_or_start(run.checkpoints, init, shardings)
    start = run.resume(meta, **settings)
    return run.steps(state, train_step, batches(start), total_steps=total_steps, evaluate=evaluate,
                     log_every=log_every, eval_every=eval_every, desc=desc, extra=extra)


def frozen_on_mesh(host, mesh, config: ml_collections.ConfigDict) -> tuple:
  """((frozen variables,), (their shardings,)): a train step's frozen inputs (teachers) laid out by the state's
  sharding rules, so a teacher as large as the student is split over 'fsdp' the same way; they are not donated,
  so the same buffers serve every step."""
  shardings = sharding.infer_shardings(host, mesh, config.sharding_rules, config.fsdp_min_size)
  return (jax.device_put(host, shardings),), (shardings,)


def train_setup(config: ml_collections.ConfigDict, workdir: str, make_setup: Callable[[Any], Any],
                make_step: Callable[[Any], Callable], prepare: Callable[[Any, Dict[str, Any]], Dict[str, Any]], *,
                name: str, extra: Optional[Callable[[Any], tuple]] = None,
                batches: Optional[Callable[[Any, int], Iterator]] = None) -> Tuple[Any, Dict[str, float]]:
  """`Run` for a trainer built around a `Setup` (model, data, optimizer, and its state restored or initialised
  over its mesh; `make_setup(checkpoints)` builds it): one compiled data-parallel step `make_step(setup)`, the
  host's training batches from the resumed step (`prepare(setup, batch)` checks one and picks its keys), placed
  over the mesh, and `setup.evaluate()` every `eval_every` steps and at the end. `extra(setup)` gives values
  every step takes after the batch (frozen teachers) and their shardings. `batches(setup, start)` replaces the
  default host batches (the training split through `pp_train`) where a step reads more than one stream, as
  semi-supervised training does. Returns (setup, last evaluation)."""
  cfg = config
  with Run(workdir, cfg, keep=cfg.keep_checkpoints, checkpoint_every=cfg.checkpoint_every, tensorboard=True) as run:
    s = make_setup(run.checkpoints)
    start = run.resume(s.meta, seed=cfg.seed, global_batch=cfg.input.batch_size)
    if start >= s.total_steps:
      logging.info("%s is already at step %d of %d", workdir, start, s.total_steps)
    frozen, frozen_shardings = extra(s) if extra else ((), ())
    train_step = sharding.compile_together(
        jax.jit(make_step(s), in_shardings=(s.shardings, sharding.batch_sharding(s.mesh), *frozen_shardings),
                out_shardings=(s.shardings, sharding.replicated(s.mesh)), donate_argnums=0), name)
    if batches is None:
      host = pipeline.train_batches(s.train_data.source, s.pp_train, global_batch=cfg.input.batch_size,
                                    seed=cfg.seed, start_batch=start, num_threads=cfg.input.num_threads)
    else:
      host = batches(s, start)

    def evaluate(state):
      s.state = state
      return s.evaluate()

    s.state, result = run.steps(s.state, train_step, (global_batch(s.mesh, prepare(s, b)) for b in host),
                                total_steps=s.total_steps, evaluate=evaluate, log_every=cfg.log_every,
                                eval_every=cfg.eval_every, desc=cfg.model_name, extra=frozen)
  return s, result
