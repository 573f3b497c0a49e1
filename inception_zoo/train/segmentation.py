"""The semantic-segmentation trainer (Semantic FPN, DeepLabV3+, and the dense papers built on them), on the
step loop every trainer shares (train/loop.py).

    python -m experiments.deeplabv3plus --config=runlocal --workdir=/tmp/deeplab

`train_and_evaluate(config, workdir)` resumes from the workdir's newest checkpoint before anything else
(else loads `config.init_from`: a classifier's weights into the backbone, `config.init_scope`), trains with
jitted steps sharded over the config's mesh and evaluates mIoU on the held-out split against each image's
label map at its original resolution (mmseg's protocol). The loss is per-pixel cross-entropy with an ignore
index, or CPS's OHEM (`loss.ohem_thresh`), plus `loss.aux_weight` x the same loss on the model's auxiliary
logits where it has them. Training images are padded to one canvas (`seg_pad`), so the step compiles once;
evaluation is whole-image on a padded canvas, or mmseg's sliding window and multi-scale / flip per image
(`eval.mode`, `eval.scales`, `eval.flip`).
"""
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception_zoo import sharding
from inception_zoo.data import pipeline
from inception_zoo.data.segmentation import check_labels, load_label
from inception_zoo.errors import UserError
from inception_zoo.eval.segmentation import ConfusionMatrix, multi_scale_flip, predict, sliding_window
from inception_zoo.registry import create_model
from inception_zoo.train import loop, optim
from inception_zoo.train.classification import eval_params, update_state
from inception_zoo.train.state import TrainState, global_batch, restore_or_init, step_rng

IGNORE = 255
EVAL_MODES = ("whole", "slide")
# What a backbone's ImageNet weights hold that a segmenter's backbone has not: the ResNet's `fc`, the MobileNet's
# head convolution and classifier (its DeepLabV3+ runs without them).
CLASSIFIER_ONLY = ("fc", "conv_head", "bn2", "classifier")


def pixel_cross_entropy(logits, labels, ignore: int = IGNORE, kept=None):
  """Mean softmax cross-entropy over the labelled pixels (and `kept` ones): PyTorch's
  `CrossEntropyLoss(ignore_index=ignore)`, 0 when no pixel counts."""
  valid = labels != ignore if kept is None else (labels != ignore) & kept
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * valid) / jnp.maximum(jnp.sum(valid), 1)


def ohem_cross_entropy(logits, labels, thresh: float = 0.7, min_kept: int = 100_000, ignore: int = IGNORE):
  """CPS's `ProbOhemCrossEntropy2d` (TorchSemiSeg furnace/seg_opr/loss_opr.py), which MGD trains with: only
  pixels whose true-class probability is at most the threshold count, the threshold raised to the
  `min_kept`-th smallest probability when that is larger. As there, every labelled pixel counts when the
  batch has fewer than `min_kept` of them, or when `min_kept` is 0. A sort keeps the shapes static."""
  if min_kept <= 0:
    return pixel_cross_entropy(logits, labels, ignore)
  valid = labels != ignore
  prob = jax.nn.softmax(jax.lax.stop_gradient(logits).astype(jnp.float32), axis=-1)
  p = jnp.where(valid, jnp.take_along_axis(prob, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0], 1.0)
  threshold = jnp.maximum(thresh, jnp.sort(p.reshape(-1))[min(min_kept, p.size) - 1])
  kept = jnp.where(jnp.sum(valid) < min_kept, True, p <= threshold)
  return pixel_cross_entropy(logits, labels, ignore, kept)


def pixel_accuracy(logits, labels, ignore: int = IGNORE):
  """The fraction of labelled pixels whose argmax is their label (0 when none is labelled)."""
  labelled = labels != ignore
  return jnp.sum((jnp.argmax(logits, -1) == labels) * labelled) / jnp.maximum(jnp.sum(labelled), 1)


def make_loss(config: ml_collections.ConfigDict):
  loss = config.loss
  if loss.ohem_thresh:
    return lambda logits, labels: ohem_cross_entropy(logits, labels, loss.ohem_thresh, loss.ohem_min_kept)
  return pixel_cross_entropy


def make_train_step(model, tx, config: ml_collections.ConfigDict):
  loss_of = make_loss(config)

  def train_step(state: TrainState, batch):
    rng = step_rng(state)

    def loss_fn(params):
      out, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
                                 rngs={"dropout": rng}, mutable=["batch_stats"])
      losses = {"seg_loss": loss_of(out["logits"], batch["label"])}
      if "aux_logits" in out and config.loss.aux_weight:
        losses["aux_loss"] = config.loss.aux_weight * loss_of(out["aux_logits"], batch["label"])
      return sum(losses.values()), (losses, out["logits"], updates.get("batch_stats", state.batch_stats))

    (loss, (losses, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new, grad_norm = update_state(state, grads, loss, batch_stats, tx, config)
    return new, {"loss": loss, "pixel_accuracy": pixel_accuracy(logits, batch["label"]), "grad_norm": grad_norm,
                 **losses}

  return train_step


class Setup:
  """What a run derives from its config before the first step (shared by train and eval)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, checkpoints):
    self.config, inp = config, config.input
    if config.eval.mode not in EVAL_MODES:
      raise UserError(f"unknown eval.mode '{config.eval.mode}' ({', '.join(EVAL_MODES)})")
    self.mesh = sharding.make_mesh(config.mesh.to_dict())
    # Batched whole-image evaluation needs the training canvas; per-image evaluation takes any size.
    self.batched_eval = config.eval.mode == "whole" and not config.eval.scales and not config.eval.flip
    (self.train_data, self.eval_data, self.pp_train, self.pp_eval, self.image_shape) = pipeline.train_and_eval_input(
        inp, hint=" (pad both to one canvas with seg_pad, or evaluate image by image with eval.mode='slide')",
        same_shape=self.batched_eval)
    self.num_classes = config.get("num_classes") or self.train_data.num_classes
    self.model = create_model(config.model_name, num_classes=self.num_classes, **config.model.to_dict())
    self.steps_per_epoch = pipeline.steps_per_epoch(self.examples_per_epoch(), inp.batch_size)
    self.total_steps = config.get("total_steps") or int(round(config.num_epochs * self.steps_per_epoch))
    self.schedule = optim.make_schedule(config, self.steps_per_epoch, self.total_steps)
    self.tx = optim.make_optimizer(config, self.schedule)
    self.state, self.shardings, self.meta = restore_or_init(
        config, self.model, self.tx, self.image_shape, self.mesh, checkpoints, head="fc",
        init_scope=config.get("init_scope") or None, drop=CLASSIFIER_ONLY)
    self._apply = jax.jit(lambda state, images: self.model.apply(
        {"params": eval_params(state, config), "batch_stats": state.batch_stats}, images, train=False)["logits"])

  def examples_per_epoch(self) -> int:
    """What an epoch of the schedule counts (semi-supervised trainers count their larger, unlabelled split)."""
    return len(self.train_data)

  def evaluate(self) -> Dict[str, float]:
    """mIoU, pixel accuracy and mean class accuracy of the held-out split, at each label's original size."""
    c, source = self.config, self.eval_data.source
    matrix = ConfusionMatrix(self.num_classes, IGNORE)
    if self.batched_eval:
      g = c.input.eval_batch_size
      b, p = pipeline.local_batch_size(g), jax.process_index()
      batches = pipeline.eval_batches(source, self.pp_eval, global_batch=g, num_threads=c.input.num_threads)
      for k, local in enumerate(batches):
        logits = jax.device_get(self._apply(self.state, global_batch(self.mesh, {"image": local["image"]})["image"]))
        for i in np.flatnonzero(local["mask"]):
          index = k * g + p * b + i  # eval_batches' order: this process's rows of each global batch
          matrix.update(predict(logits[i], local["image_size"][i], local["orig_size"][i]),
                        load_label(source[index]))
    else:  # one image at a time: its own size, mmseg's slide and aug_test
      infer = self._whole if c.eval.mode == "whole" else self._slide
      rng = np.random.default_rng(0)
      for index in range(jax.process_index(), len(source), jax.process_count()):
        example = source[index]
        packed = self.pp_eval(example, rng)
        probs = multi_scale_flip(infer, packed["image"][None], tuple(c.eval.scales) or (1.0,), c.eval.flip,
                                 size=tuple(packed["orig_size"]))[0]
        matrix.update(np.argmax(probs, -1), load_label(example))
    matrix.merge_processes()
    return {f"eval/{k}": v for k, v in matrix.compute().items() if np.isscalar(v)}

  def _whole(self, images):
    return np.asarray(jax.device_get(self._apply(self.state, jnp.asarray(images))))

  def _slide(self, images):
    e = self.config.eval
    return sliding_window(self._whole, images, self.num_classes, tuple(e.crop), tuple(e.stride))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  def prepare(s, batch):  # a class id past the model's classes: a one-line error, not a silent wrong loss
    check_labels(batch, s.num_classes, IGNORE)
    return {"image": batch["image"], "label": batch["label"]}

  s, result = loop.train_setup(config, workdir, lambda checkpoints: Setup(config, workdir, checkpoints),
                               lambda s: make_train_step(s.model, s.tx, config), prepare,
                               name="segmentation train step")
  if jax.process_index() == 0:
    print(f"{config.model_name}: held-out mIoU {result.get('eval/mIoU', float('nan')):.4f}, pixel accuracy "
          f"{result.get('eval/aAcc', float('nan')):.4f} ({len(s.eval_data)} images, step "
          f"{int(jax.device_get(s.state.step))})")
  return result


def base_config() -> ml_collections.ConfigDict:
  """Every field this trainer reads, with neutral defaults; experiments set what differs."""
  c = ml_collections.ConfigDict()
  c.name = "segmentation"
  c.seed = 0
  c.model_name = ""
  c.model = ml_collections.ConfigDict()  # keyword options of create_model (output_stride, aux, ...)
  c.num_classes = 0              # 0: the dataset's
  c.init_from = ""               # a classifier's weights for the backbone (inception_zoo.convert output)
  c.init_scope = "backbone"
  c.input = ml_collections.ConfigDict(dict(
      data="", data_dir=None, train_split="train", eval_split="validation", batch_size=16, eval_batch_size=16,
      pp_train="", pp_eval="", num_threads=4))
  c.num_epochs = 1.0
  c.total_steps = 0              # 0: num_epochs * steps per epoch
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", momentum=0.9, nesterov=False, weight_decay=1e-4, wd_mask=r".*", grad_clip=0.0, freeze=""))
  c.schedule = ml_collections.ConfigDict(dict(
      name="poly", base_lr=0.01, power=0.9, end_lr_fraction=0.0, warmup_epochs=0.0, warmup_from=0.0))
  c.loss = ml_collections.ConfigDict(dict(
      ohem_thresh=0.0,           # > 0: CPS's OHEM at this probability threshold (0.7 in CPS and MGD)
      ohem_min_kept=100_000,     # OHEM's minimum of kept pixels per batch
      aux_weight=0.4))           # weight of the auxiliary head's loss, where the model has one (mmseg's 0.4)
  c.eval = ml_collections.ConfigDict(dict(
      mode="whole",              # 'whole' (the padded canvas) or 'slide' (mmseg's sliding window)
      crop=(512, 512), stride=(341, 341),  # the sliding window
      scales=(), flip=False))    # multi-scale (ratios of the eval size) and flip averaging; () = single scale
  c.ema_decay = 0.0
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.sharding_rules = sharding.DEFAULT_RULES
  c.fsdp_min_size = 2 ** 14
  c.log_every = 20
  c.eval_every = 0
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  return c
