"""The generic supervised image-classification trainer most experiments call, on the step loop every
trainer shares (train/loop.py).

    python -m experiments.inception_v4 --config=runlocal --workdir=/tmp/iv4

`train_and_evaluate(config, workdir)` resumes from the workdir's newest checkpoint before anything else
(else loads `config.init_from` weights), trains with jitted steps sharded over the config's mesh,
evaluates top-1/top-5 on the held-out split, writes metrics, saves checkpoints, and returns the final
evaluation. `evaluate(config, workdir)` (`--config.mode=eval`) scores a workdir or imported weights.

Both take a `Task`: the model, the train step, the eval step and the final line. `CLASSIFICATION` is
this module's; a trainer whose loss differs but whose loop does not (projects/simmim/task.py, train/distill.py)
passes its own and reuses everything else: input, sharding, resume, NaN stop, metrics, checkpoints,
pre-emption. A task may also name frozen variables (a distillation's teachers): loaded once, laid out
by the config's sharding rules, and given to every train step as an argument that is never donated.
"""
import dataclasses
from typing import Any, Callable, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception_zoo import ckpt, sharding
from inception_zoo.data import pipeline
from inception_zoo.errors import UserError
from inception_zoo.registry import create_model
from inception_zoo.train import loop, mixup, optim
from inception_zoo.train.state import (TrainState, apply_gradients, ema_update, global_batch,
                                       restore_or_init, step_rng)


def cross_entropy(logits, targets):
  """Softmax cross-entropy against soft targets (one-hot, label-smoothed, or mixed by Mixup/CutMix)."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def update_state(state: TrainState, grads, loss, batch_stats, tx: optax.GradientTransformation,
                 config: ml_collections.ConfigDict):
  """`apply_gradients` for a `TrainState`: the optimizer update, the step count, the new batch
  statistics and the parameter EMA, all kept back on a non-finite step. Returns (state, grad norm)."""
  return apply_gradients(state, grads, loss, tx, finish=lambda new: new.replace(
      step=state.step + 1, batch_stats=batch_stats,
      ema_params=ema_update(state.ema_params, new.params, state.step, config.ema_decay)))


def make_train_step(model, tx, schedule, config,
                    apply_kwargs: Optional[Callable[[TrainState], Dict[str, Any]]] = None):
  """The supervised step; `apply_kwargs(state)` adds keyword arguments of `model.apply` (QAT's step)."""
  num_classes = model.num_classes

  def train_step(state: TrainState, batch):
    rng = step_rng(state)
    # Mixup/CutMix draw from their own fold of the step key: dropout sees the same key either way.
    images, targets = mixup.mix_batch(jax.random.fold_in(rng, 1), batch["image"], batch["label"],
                                      num_classes, config.label_smoothing, config)

    def loss_fn(params):
      (logits, _), updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, images, train=True,
          mutable=["batch_stats"], rngs={"dropout": rng}, **(apply_kwargs(state) if apply_kwargs else {}))
      loss = cross_entropy(logits, targets).mean()
      return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new, grad_norm = update_state(state, grads, loss, batch_stats, tx, config)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
               "grad_norm": grad_norm, "learning_rate": schedule(state.step)}
    return new, metrics

  return train_step


def eval_params(state: TrainState, config: ml_collections.ConfigDict):
  """The parameters a run is evaluated with: their EMA when the run keeps one."""
  return state.ema_params if config.ema_decay else state.params


def make_eval_step(model, config):
  k = min(5, model.num_classes)

  def eval_step(state: TrainState, batch):
    params = eval_params(state, config)
    logits, _ = model.apply({"params": params, "batch_stats": state.batch_stats}, batch["image"],
                            train=False)
    mask, labels = batch["mask"], batch["label"]
    top_k = jax.lax.top_k(logits, k)[1]
    return {"top1": jnp.sum((top_k[:, 0] == labels) * mask),
            f"top{k}": jnp.sum(jnp.any(top_k == labels[:, None], axis=-1) * mask),
            "loss": jnp.sum(cross_entropy(logits, jax.nn.one_hot(labels, model.num_classes)) * mask),
            "count": jnp.sum(mask)}

  return eval_step


@dataclasses.dataclass(frozen=True)
class Task:
  """What a trainer plugs into the shared loop.

  build_model(config, dataset classes) -> the model; make_train_step(model, tx, schedule, config) ->
  step(state, batch) -> (state, metrics with 'loss'); make_eval_step(model, config) -> step(state,
  batch) -> sums over the batch's unpadded rows, 'count' being what they are divided by;
  summary(config, eval result, eval images, step) -> the line printed at the end.
  frozen(setup) -> host arrays the train step reads but never trains (None: none), from the run's
  `Setup` (config, model, image shape); the step is then step(state, batch, frozen). They are loaded
  for training only: evaluation scores the state alone.
  wrap_optimizer(tx, config) -> the optimizer the run trains with (None: the config's as it is): how a
  method that changes the update (sparse training's masks, sparsity/training.py) plugs in."""
  build_model: Callable[[ml_collections.ConfigDict, int], nn.Module]
  make_train_step: Callable[..., Callable]
  make_eval_step: Callable[..., Callable]
  summary: Callable[[ml_collections.ConfigDict, Dict[str, float], int, int], str]
  frozen: Optional[Callable[[Any], Any]] = None
  wrap_optimizer: Optional[Callable[[optax.GradientTransformation, ml_collections.ConfigDict],
                                    optax.GradientTransformation]] = None

  def optimizer(self, tx: optax.GradientTransformation,
                config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optimizer this task trains with, given the config's (`wrap_optimizer` applied, if any)."""
    return tx if self.wrap_optimizer is None else self.wrap_optimizer(tx, config)


def build_classifier(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  return create_model(config.model_name, num_classes=config.get("num_classes") or num_classes,
                      **config.model.to_dict())


def classification_summary(config, result: Dict[str, float], num_images: int, step: int) -> str:
  return f"{config.model_name}: held-out top-1 {result['eval/top1']:.4f} ({num_images} images, step {step})"


CLASSIFICATION = Task(build_classifier, make_train_step, make_eval_step, classification_summary)


class Setup:
  """Everything a run derives from its config before the first step (shared by train and eval)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, task: Task = CLASSIFICATION,
               checkpoints: Optional[ckpt.Checkpoints] = None):
    """Restores from `checkpoints` (a `loop.Run`'s), else from its own over `workdir` (then close it)."""
    self.config, self.workdir, self.task = config, workdir, task
    inp = config.input
    self.mesh = sharding.make_mesh(config.mesh.to_dict())
    (self.train_data, self.eval_data, self.pp_train, self.pp_eval,
     self.image_shape) = pipeline.train_and_eval_input(inp)
    self.model = self.task.build_model(config, self.train_data.num_classes)
    self.steps_per_epoch = pipeline.steps_per_epoch(len(self.train_data), inp.batch_size)
    self.total_steps = config.get("total_steps") or int(round(config.num_epochs * self.steps_per_epoch))
    self.schedule = optim.make_schedule(config, self.steps_per_epoch, self.total_steps)
    self.tx = task.optimizer(optim.make_optimizer(config, self.schedule), config)
    self.checkpoints = checkpoints or ckpt.Checkpoints(workdir, keep=config.keep_checkpoints,
                                                       every_steps=config.checkpoint_every)
    self.state, self.shardings, self.meta = restore_or_init(
        config, self.model, self.tx, self.image_shape, self.mesh, self.checkpoints,
        head=getattr(self.model, "head_name", "head"), init_scope=getattr(self.model, "init_scope", None))
    batch_sharding = sharding.batch_sharding(self.mesh)
    self.eval_step = sharding.compile_together(
        jax.jit(self.task.make_eval_step(self.model, config),
                in_shardings=(self.shardings, batch_sharding)), "eval step")

  def evaluate(self) -> Dict[str, float]:
    sums: Dict[str, float] = {}
    for local in pipeline.eval_batches(self.eval_data.source, self.pp_eval,
                                       global_batch=self.config.input.eval_batch_size,
                                       num_threads=self.config.input.num_threads):
      out = self.eval_step(self.state, global_batch(self.mesh, local))
      for k, v in jax.device_get(out).items():
        sums[k] = sums.get(k, 0.0) + float(v)
    count = sums.pop("count")
    return {f"eval/{k}": v / count for k, v in sums.items()}


def load_frozen(s: Setup) -> tuple:
  """((frozen variables,), (their shardings,)) on the mesh (`loop.frozen_on_mesh`), or ((), ()) for a task
  without any."""
  if s.task.frozen is None:
    return (), ()
  return loop.frozen_on_mesh(s.task.frozen(s), s.mesh, s.config)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       task: Task = CLASSIFICATION) -> Dict[str, float]:
  s, result = loop.train_setup(
      config, workdir, lambda checkpoints: Setup(config, workdir, task, checkpoints=checkpoints),
      lambda s: s.task.make_train_step(s.model, s.tx, s.schedule, config), lambda s, batch: batch,
      name="train step", extra=load_frozen)
  if jax.process_index() == 0:
    print(s.task.summary(config, result, len(s.eval_data), int(jax.device_get(s.state.step))))
  return result


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             task: Task = CLASSIFICATION) -> Dict[str, float]:
  """Scores the newest checkpoint in `workdir`, or `config.init_from` weights when it has none."""
  s = Setup(config, workdir, task)
  if not s.meta and not config.get("init_from"):
    raise UserError(f"nothing to evaluate: {workdir} has no checkpoint and config.init_from is empty")
  result = s.evaluate()
  s.checkpoints.close()
  if jax.process_index() == 0:
    print(f"{config.model_name}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
  return result


def run(config: ml_collections.ConfigDict, workdir: str, task: Task = CLASSIFICATION) -> Dict[str, float]:
  modes = {"train": train_and_evaluate, "eval": evaluate}
  if config.mode not in modes:
    raise UserError(f"unknown mode '{config.mode}' (train, eval)")
  return modes[config.mode](config, workdir, task)


def base_config() -> ml_collections.ConfigDict:
  """Every field this trainer reads, with neutral defaults; experiments set what differs."""
  c = ml_collections.ConfigDict()
  c.name = "run"                 # default workdir name under workdirs/
  c.seed = 0
  c.mode = "train"               # 'train' | 'eval'
  c.model_name = ""
  c.model = ml_collections.ConfigDict()  # keyword options of create_model
  c.num_classes = 0              # 0: the dataset's
  c.init_from = ""               # params-only weights (inception_zoo.convert or a run's export)
  c.init_from_scope = ""         # take this submodule of them ('student' of a MEAL V2 run)
  c.input = ml_collections.ConfigDict(dict(
      data="", data_dir=None, train_split="train", eval_split="test", batch_size=64,
      eval_batch_size=128, pp_train="", pp_eval="", num_threads=4))
  c.num_epochs = 1.0
  c.total_steps = 0              # 0: num_epochs * steps per epoch
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", momentum=0.9, nesterov=False, decay=0.9, eps=1e-8, b1=0.9, b2=0.999,
      weight_decay=0.0, wd_mask=r".*kernel", grad_clip=0.0))
  c.schedule = ml_collections.ConfigDict(dict(
      name="constant", base_lr=0.1, decay_rate=0.94, decay_epochs=2.0, warmup_epochs=0.0,
      end_lr_fraction=0.0))
  c.label_smoothing = 0.0
  # Mixup / CutMix in timm's 'batch' mode (train/mixup.py); both alphas 0: off.
  c.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5))
  c.ema_decay = 0.0              # 0: evaluate the raw parameters
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.sharding_rules = sharding.DEFAULT_RULES
  c.fsdp_min_size = 2 ** 14      # leaves smaller than this stay replicated under 'fsdp' rules
  c.log_every = 50
  c.eval_every = 0               # 0: only at the end
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  return c
