"""The object-detection / instance-segmentation trainer (Faster / Mask R-CNN, RetinaNet, and the dense
papers built on them), on the step loop every trainer shares (train/loop.py).

    python -m experiments.mask_rcnn --config=runlocal --workdir=/tmp/mask_rcnn

`train_and_evaluate(config, workdir)` resumes from the workdir's newest checkpoint before anything else
(else loads `config.init_from`: a classifier's weights into the backbone, `config.init_scope`, heads
fresh), trains with jitted steps sharded over the config's mesh (the model returns its losses in train
mode; their sum is minimised), and evaluates COCO box (and mask) AP with pycocotools on the held-out
split. Every shape is static: images are padded to one canvas and instances to `max_instances` by the
`det_pack` pp op, so the train step compiles once. BatchNorm in a data-parallel step over the mesh sees
the global batch: `frozen_bn=False` is synchronised BatchNorm without further code.
"""
import logging
from typing import Any, Dict

import jax
import ml_collections
import numpy as np

from inception_zoo import sharding
from inception_zoo.data import pipeline
from inception_zoo.eval.coco import CocoEvaluator, paste_masks
from inception_zoo.models.detection.rcnn import check_targets
from inception_zoo.registry import create_model
from inception_zoo.train import loop, optim
from inception_zoo.train.classification import eval_params, update_state
from inception_zoo.train.state import TrainState, global_batch, restore_or_init, step_rng

TARGETS = ("boxes", "labels", "instance_valid", "masks")


def make_train_step(model, tx, config: ml_collections.ConfigDict):
  def train_step(state: TrainState, batch):
    rng = step_rng(state)
    targets = {k: batch[k] for k in TARGETS if k in batch}

    def loss_fn(params):
      losses, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, batch["image"],
                                    targets=targets, image_sizes=batch["image_size"], train=True,
                                    rngs={"sampling": rng, "dropout": rng}, mutable=["batch_stats"])
      return sum(losses.values()), (losses, updates.get("batch_stats", state.batch_stats))

    (loss, (losses, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new, grad_norm = update_state(state, grads, loss, batch_stats, tx, config)
    return new, {"loss": loss, "grad_norm": grad_norm, **losses}

  return train_step


class Setup:
  """What a run derives from its config before the first step (shared by train and eval)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, checkpoints):
    self.config, inp = config, config.input
    self.mesh = sharding.make_mesh(config.mesh.to_dict())
    (self.train_data, self.eval_data, self.pp_train, self.pp_eval, self.image_shape) = pipeline.train_and_eval_input(
        inp, hint=" (pad both to one canvas with det_pad)")
    self.num_classes = config.get("num_classes") or self.train_data.num_classes
    self.model = create_model(config.model_name, num_classes=self.num_classes, **config.model.to_dict())
    self.steps_per_epoch = pipeline.steps_per_epoch(len(self.train_data), inp.batch_size)
    self.total_steps = config.get("total_steps") or int(round(config.num_epochs * self.steps_per_epoch))
    self.schedule = optim.make_schedule(config, self.steps_per_epoch, self.total_steps)
    self.tx = optim.make_optimizer(config, self.schedule)
    self.state, self.shardings, self.meta = restore_or_init(
        config, self.model, self.tx, self.image_shape, self.mesh, checkpoints, head="fc",
        init_scope=config.get("init_scope") or None, drop=("fc",))
    self._apply = jax.jit(lambda state, images, sizes: self.model.apply(
        {"params": eval_params(state, config), "batch_stats": state.batch_stats}, images, image_sizes=sizes,
        train=False))

  def evaluate(self) -> Dict[str, float]:
    """COCO AP of the held-out split: detections mapped back to each image's original pixels."""
    c = self.config
    evaluator = CocoEvaluator(self.eval_data.source, self.eval_data.source.label_to_category_id,
                              iou_types=tuple(c.eval.iou_types), max_dets=tuple(c.eval.max_dets),
                              max_per_image=c.eval.max_per_image)
    for local in pipeline.eval_batches(self.eval_data.source, self.pp_eval, global_batch=c.input.eval_batch_size,
                                       num_threads=c.input.num_threads):
      inputs = global_batch(self.mesh, {k: local[k] for k in ("image", "image_size")})
      out = jax.device_get(self._apply(self.state, inputs["image"], inputs["image_size"]))
      for i in np.flatnonzero(local["mask"]):
        add_detections(evaluator, {k: v[i] for k, v in out.items()}, {k: v[i] for k, v in local.items()})
    return {f"eval/{k}": v for k, v in evaluator.summarize().items()}


def add_detections(evaluator: CocoEvaluator, out: Dict[str, np.ndarray], example: Dict[str, Any]):
  """One image's padded detections, in the original image's pixels (masks pasted there, binarised at 0.5)."""
  keep = np.flatnonzero(out["valid"])
  (h, w), (rh, rw) = example["orig_size"], example["image_size"]
  # Per axis, as torchvision's postprocess: rounding makes the two resize factors differ slightly.
  boxes = out["boxes"][keep] * np.array([w / rw, h / rh, w / rw, h / rh], np.float32)
  masks = None
  if "mask_probs" in out and "segm" in evaluator.iou_types:  # pasted at the original size, as torchvision
    masks = paste_masks(out["mask_probs"][keep], boxes, int(h), int(w)) >= 0.5
  evaluator.add(int(example["image_id"]), boxes, out["scores"][keep], out["labels"][keep], masks)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  cfg = config
  with loop.Run(workdir, cfg, keep=cfg.keep_checkpoints, checkpoint_every=cfg.checkpoint_every,
                tensorboard=True) as run:
    s = Setup(cfg, workdir, run.checkpoints)
    start = run.resume(s.meta, seed=cfg.seed, global_batch=cfg.input.batch_size)
    if start >= s.total_steps:
      logging.info("%s is already at step %d of %d", workdir, start, s.total_steps)
    train_step = sharding.compile_together(
        jax.jit(make_train_step(s.model, s.tx, cfg),
                in_shardings=(s.shardings, sharding.batch_sharding(s.mesh)),
                out_shardings=(s.shardings, sharding.replicated(s.mesh)), donate_argnums=0), "detection train step")
    batches = pipeline.train_batches(s.train_data.source, s.pp_train, global_batch=cfg.input.batch_size,
                                     seed=cfg.seed, start_batch=start, num_threads=cfg.input.num_threads)
    keys = ("image", "image_size") + TARGETS

    def evaluate(state):
      s.state = state
      return s.evaluate()

    def checked(batches):  # a class id past the model's classes: a one-line error, not a silent wrong loss
      for b in batches:
        check_targets(b, s.num_classes, masks="masks" in b)
        yield global_batch(s.mesh, {k: b[k] for k in keys if k in b})

    s.state, result = run.steps(s.state, train_step, checked(batches),
                                total_steps=s.total_steps, evaluate=evaluate, log_every=cfg.log_every,
                                eval_every=cfg.eval_every, desc=cfg.model_name)
  if jax.process_index() == 0:
    print(f"{cfg.model_name}: held-out box AP {result.get('eval/bbox/AP', float('nan')):.4f}"
          + (f", mask AP {result['eval/segm/AP']:.4f}" if "eval/segm/AP" in result else "")
          + f" ({len(s.eval_data)} images, step {int(jax.device_get(s.state.step))})")
  return result


def base_config() -> ml_collections.ConfigDict:
  """Every field this trainer reads, with neutral defaults; experiments set what differs."""
  c = ml_collections.ConfigDict()
  c.name = "detection"
  c.seed = 0
  c.model_name = ""
  c.model = ml_collections.ConfigDict()  # keyword options of create_model (thresholds, frozen_bn, ...)
  c.num_classes = 0              # 0: the dataset's (object classes + background)
  c.init_from = ""               # a classifier's weights for the backbone (inception_zoo.convert output)
  c.init_scope = "backbone/body"
  c.input = ml_collections.ConfigDict(dict(
      data="", data_dir=None, train_split="train", eval_split="test", batch_size=16, eval_batch_size=16,
      pp_train="", pp_eval="", num_threads=4))
  c.num_epochs = 1.0
  c.total_steps = 0              # 0: num_epochs * steps per epoch
  c.optimizer = ml_collections.ConfigDict(dict(
      # torchvision's reference recipe decays every parameter
      name="sgd", momentum=0.9, nesterov=False, weight_decay=1e-4, wd_mask=r".*", grad_clip=0.0, freeze=""))
  c.schedule = ml_collections.ConfigDict(dict(
      name="multistep", base_lr=0.02, warmup_epochs=0.0, warmup_from=0.001, milestones=(), decay_rate=0.1))
  c.ema_decay = 0.0
  c.eval = ml_collections.ConfigDict(dict(iou_types=("bbox", "segm"), max_dets=(1, 10, 100), max_per_image=100))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.sharding_rules = sharding.DEFAULT_RULES
  c.fsdp_min_size = 2 ** 14
  c.log_every = 20
  c.eval_every = 0
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  return c
