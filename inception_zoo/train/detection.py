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

Test-time augmentation (`config.eval.tta`, detectron2's DatasetMapperTTA / GeneralizedRCNNWithTTA): the eval
pipeline runs once per shortest-edge scale in `scales` (the eval's own when empty), each also mirrored with
`flip`; every variant's detections are mapped back to the original image (boxes un-flipped, and the 28x28
mask probabilities mirrored with them), pooled, and merged per image by class-wise NMS at `nms_thresh` (0:
the model's test threshold, detectron2's choice) to the `max_per_image` best. Each variant keeps its own mask:
detectron2 instead re-runs the mask head on the merged boxes in every variant and averages those masks. A
scale's long side is capped at `max_size` (0: the eval's cap scaled with the scale, as mmdet's (1333, 800),
(666, 400) pairs) and its canvas is the eval's `det_pad` canvas scaled by as much, rounded up to a multiple
of 32: one compilation per scale (its flip shares it), none more when scales share a canvas.
"""
import functools
import inspect
import math
from typing import Any, Callable, Dict, List, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from inception_zoo import sharding
from inception_zoo.data import detection as det_data
from inception_zoo.data import pipeline, pp
from inception_zoo.errors import UserError
from inception_zoo.eval.coco import CocoEvaluator, paste_masks
from inception_zoo.models.detection.rcnn import SIZE_DIVISIBLE, check_targets
from inception_zoo.ops.nms import batched_nms
from inception_zoo.registry import create_model
from inception_zoo.train import loop, optim
from inception_zoo.train.classification import eval_params, update_state
from inception_zoo.train.state import TrainState, global_batch, restore_or_init, step_rng

TARGETS = ("boxes", "labels", "instance_valid", "masks")
# What evaluation reads of the model's output (the canvas-sized pasted `masks` stay on the device).
DETECTIONS = ("boxes", "scores", "labels", "valid", "mask_probs")


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
    self.eval_variants = eval_variants(inp.pp_eval, config.eval.tta, self.eval_data.source)
    # The model's test NMS threshold: the test-time merge's unless eval.tta.nms_thresh is set (detectron2's).
    self.model_nms_thresh = getattr(self.model, "box_nms_thresh", None) or getattr(self.model, "nms_thresh", 0.5)

  def detect(self, local: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """A local batch's padded detections (B, D, ...) on its network input, on the host."""
    inputs = global_batch(self.mesh, {k: local[k] for k in ("image", "image_size")})
    out = self._apply(self.state, inputs["image"], inputs["image_size"])
    return jax.device_get({k: out[k] for k in DETECTIONS if k in out})

  def evaluate(self) -> Dict[str, float]:
    """COCO AP of the held-out split: detections mapped back to each image's original pixels (and, with
    test-time variants, merged there)."""
    c = self.config
    evaluator = CocoEvaluator(self.eval_data.source, self.eval_data.source.label_to_category_id,
                              iou_types=tuple(c.eval.iou_types), max_dets=tuple(c.eval.max_dets),
                              max_per_image=c.eval.max_per_image)
    # One stream per variant, in lockstep (eval batches are deterministic), sharing the reader threads.
    threads = max(1, c.input.num_threads // len(self.eval_variants))
    streams = [pipeline.eval_batches(self.eval_data.source, fn, global_batch=c.input.eval_batch_size,
                                     num_threads=threads) for fn, _ in self.eval_variants]
    for batches in zip(*streams):
      dets = [to_original(self.detect(b), b, flipped) for b, (_, flipped) in zip(batches, self.eval_variants)]
      if len(dets) > 1:
        det = merge_detections(dets, c.eval.tta.nms_thresh or self.model_nms_thresh, c.eval.max_per_image)
      else:
        det = dets[0]
      local = batches[0]
      for i in np.flatnonzero(local["mask"]):
        add_detections(evaluator, {k: v[i] for k, v in det.items()}, local["orig_size"][i], local["image_id"][i])
    return {f"eval/{k}": v for k, v in evaluator.summarize().items()}


def eval_variants(pp_eval: str, tta: ml_collections.ConfigDict, source) -> List[Tuple[Callable, bool]]:
  """(eval pp, flipped) per test-time variant, the eval pipeline alone without TTA; each variant is checked
  on one example now, not at the first evaluation after hours of training."""
  if not tuple(tta.scales) and not tta.flip:
    return [(pp.build(pp_eval), False)]
  variants = [(pp.build(spec), flipped) for spec, flipped in tta_variants(pp_eval, tta)]
  for fn, _ in variants:
    pipeline.preview(source, fn)
  return variants


def tta_variants(pp_eval: str, tta: ml_collections.ConfigDict) -> List[Tuple[str, bool]]:
  """(pp string, flipped) of each test-time variant of the eval pipeline, scales in order, each unflipped
  then flipped: its `det_resize` set to the scale (and cap, see the module docstring), `det_flip(1.0)` after
  it, its `det_pad` canvas scaled."""
  specs = [spec.strip() for spec in pp_eval.split("|") if spec.strip()]
  names = [pp._parse(spec)[0] for spec in specs]
  if names.count("det_resize") != 1 or names.count("det_pad") != 1 or names.index("det_pad") < names.index(
      "det_resize"):
    raise UserError(f"eval.tta needs pp_eval with one det_resize and one det_pad after it; got '{pp_eval}'")
  r, p = names.index("det_resize"), names.index("det_pad")
  resize = _bound(det_data.det_resize, specs[r])
  min0, max0 = resize["min_size"], resize["max_size"]
  canvas0 = _bound(det_data.det_pad, specs[p])["size"]
  canvas0 = (canvas0, canvas0) if isinstance(canvas0, int) else tuple(canvas0)
  scales = tuple(tta.scales) or (min0,)
  if any(not isinstance(s, int) or s < 1 for s in scales) or tta.max_size < 0 or not 0 <= tta.nms_thresh <= 1:
    raise UserError(f"eval.tta needs positive integer scales, max_size >= 0 and 0 <= nms_thresh <= 1; got "
                    f"{scales}, {tta.max_size}, {tta.nms_thresh}")
  variants = []
  for s in scales:
    max_size = tta.max_size or (max0 * s / min0 if max0 else None)
    if isinstance(max_size, float) and max_size.is_integer():
      max_size = int(max_size)
    # For every image, this resize factor is at most k times the eval's: the eval canvas times k holds it.
    k = max(s / min0, max_size / max0 if max0 else 0)
    if k == 1:
      pad = specs[p]
    else:
      canvas = tuple(math.ceil(math.ceil(k * side) / SIZE_DIVISIBLE) * SIZE_DIVISIBLE for side in canvas0)
      pad = f"det_pad({canvas[0] if canvas[0] == canvas[1] else canvas})"
    for flipped in (False, True) if tta.flip else (False,):
      ops = specs[:r] + [f"det_resize({s}, {max_size!r})"] + ["det_flip(1.0)"] * flipped + specs[r + 1:p] + [pad]
      variants.append(("|".join(ops + specs[p + 1:]), flipped))
  return variants


def _bound(op, spec: str) -> Dict[str, Any]:
  """The arguments, defaults included, of one pp op's spec."""
  _, args, kwargs = pp._parse(spec)
  try:
    bound = inspect.signature(op).bind(*args, **kwargs)
  except TypeError as e:
    raise UserError(f"bad arguments for preprocessing op '{spec}': {e}")
  bound.apply_defaults()
  return bound.arguments


def to_original(out: Dict[str, np.ndarray], batch: Dict[str, np.ndarray], flipped: bool = False
                ) -> Dict[str, np.ndarray]:
  """A batch's padded detections (B, D, ...) in each image's original pixels; a flipped variant's boxes and
  mask probabilities mirrored back."""
  # Per axis, as torchvision's postprocess: rounding makes the two resize factors differ slightly.
  ratio = (batch["orig_size"] / batch["image_size"]).astype(np.float32)  # (B, 2): h, w
  det = dict(out, boxes=out["boxes"] * ratio[:, None, [1, 0, 1, 0]])
  if flipped:  # the variant mirrored its resized image: x -> w - x, in the original pixels as well
    b, w = det["boxes"], batch["orig_size"][:, 1, None].astype(np.float32)
    det["boxes"] = np.stack([w - b[..., 2], b[..., 1], w - b[..., 0], b[..., 3]], -1)
    if "mask_probs" in det:  # each 28x28 map spans its box: mirrored with it
      det["mask_probs"] = det["mask_probs"][..., ::-1]
  return det


@functools.partial(jax.jit, static_argnames=("iou_threshold", "max_output"))
def _batched_nms(boxes, scores, labels, valid, *, iou_threshold: float, max_output: int):
  return jax.vmap(lambda b, s, lab, v: batched_nms(b, s, lab, iou_threshold, max_output, valid=v))(
      boxes, scores, labels, valid)


def merge_detections(variants: Sequence[Dict[str, np.ndarray]], iou_threshold: float,
                     max_per_image: int) -> Dict[str, np.ndarray]:
  """Test-time variants' padded detections (each (B, D, ...) in the original pixels, `to_original`) merged
  per image as detectron2's GeneralizedRCNNWithTTA: class-wise NMS over their union, the `max_per_image`
  highest scores kept. Padded (B, min(max_per_image, V D), ...) with `valid`; one compilation (static V D)."""
  union = {k: np.concatenate([v[k] for v in variants], axis=1) for k in variants[0]}
  keep, kept = jax.device_get(_batched_nms(
      union["boxes"], union["scores"], union["labels"], union["valid"], iou_threshold=float(iou_threshold),
      max_output=min(max_per_image, union["boxes"].shape[1])))
  merged = {k: np.take_along_axis(v, keep.reshape(keep.shape + (1,) * (v.ndim - 2)), axis=1)
            for k, v in union.items()}
  merged["valid"] = np.asarray(kept)
  return merged


def add_detections(evaluator: CocoEvaluator, det: Dict[str, np.ndarray], orig_size, image_id):
  """One image's padded detections in its original pixels (masks pasted there, binarised at 0.5)."""
  keep = np.flatnonzero(det["valid"])
  h, w = (int(v) for v in orig_size)
  boxes = det["boxes"][keep]
  masks = None
  if "mask_probs" in det and "segm" in evaluator.iou_types:  # pasted at the original size, as torchvision
    masks = paste_masks(det["mask_probs"][keep], boxes, h, w) >= 0.5
  evaluator.add(int(image_id), boxes, det["scores"][keep], det["labels"][keep], masks)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  keys = ("image", "image_size") + TARGETS

  def prepare(s, batch):  # a class id past the model's classes: a one-line error, not a silent wrong loss
    check_targets(batch, s.num_classes, masks="masks" in batch)
    return {k: batch[k] for k in keys if k in batch}

  s, result = loop.train_setup(config, workdir, lambda checkpoints: Setup(config, workdir, checkpoints),
                               lambda s: make_train_step(s.model, s.tx, config), prepare,
                               name="detection train step")
  if jax.process_index() == 0:
    print(f"{config.model_name}: held-out box AP {result.get('eval/bbox/AP', float('nan')):.4f}"
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
  # Test-time augmentation (module docstring): off while scales is empty and flip False; scales=() with
  # flip=True flips at the eval's scale. detectron2's TEST.AUG is scales=(400, 500, ..., 1200),
  # max_size=4000, flip=True: every canvas is then 4064 px (a 400 px scale may be 4000 px long).
  c.eval.tta = ml_collections.ConfigDict(dict(scales=(), max_size=0, flip=False, nms_thresh=0.0))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  c.sharding_rules = sharding.DEFAULT_RULES
  c.fsdp_min_size = 2 ** 14
  c.log_every = 20
  c.eval_every = 0
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  return c
