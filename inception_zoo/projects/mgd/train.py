"""MGD's distillation task on the segmentation trainer (train/segmentation.py): a lightweight DeepLabV3+ student
learns from labelled and unlabelled images and two frozen teachers.

    python -m experiments.mgd --config=runlocal --workdir=workdirs/mgd

One step, as the official `train.py` (JayQine/MGD-SSSS, exp.*/train.py) computes it, for the terms that reach the
student (the teachers' own supervised and pseudo-label terms there have no gradient: both run under `no_grad`):
- supervised: OHEM cross-entropy (Cityscapes) or cross-entropy (VOC) of the student on the labelled batch;
- pixel level: two unlabelled batches are mixed by CutMix box masks; the student's logits on the mixed images
  learn each teacher's argmax of its logits mixed by the same mask, and on the labelled batch each teacher's
  argmax (cross-entropy, weight `mgd.pixel_weight`);
- image level: the sum of |average-pooled class logits| differences between the student and the image teacher
  (a deep-stem ResNet-101) on the mixed images, weight `mgd.image_weight` (lambda_1). The official sum runs over
  each GPU's batch and is averaged over GPUs; it is scaled here by `mgd.images_per_device` / batch size so the
  loss is the same on any number of devices;
- region level: the MSE between the cosine self-similarity matrices of the 7x7-pooled 256-channel decoder
  features of the student and the region teacher (WRN-34-2) on the mixed images, weight `mgd.region_weight`.
A weight of 0 turns a loss off (the ablations). The teachers run with BatchNorm on batch statistics, as the
official `model.train()` leaves them (`mgd.teacher_batch_stats`), their statistics are not kept. The epoch counts
the larger (unlabelled) split, as CPS's `niters_per_epoch`. The labelled batch, the two unlabelled ones and the
masks are functions of the step, so resume is exact.
"""
from typing import Dict, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception_zoo.data import datasets, pipeline
from inception_zoo.data.segmentation import check_labels
from inception_zoo.errors import UserError
from inception_zoo.projects.mgd import losses
from inception_zoo.train import distill, loop, segmentation
from inception_zoo.train.classification import update_state
from inception_zoo.train.state import TrainState, step_rng

ROLES = ("region", "image")  # config.teachers: teacher 1 (WRN-34-2), teacher 2 (ResNet-101)


class Setup(segmentation.Setup):
  """The segmentation Setup of the student, plus the unlabelled split (read before the schedule is built)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, checkpoints):
    inp = config.input
    if not inp.unlabeled_split:
      raise UserError("config.input.unlabeled_split is empty: MGD trains on a labelled and an unlabelled split "
                      "(e.g. labeled_1-8 / unlabeled_1-8)")
    if sorted(config.teachers) != sorted(ROLES):
      raise UserError(f"config.teachers must name the two teachers {' and '.join(ROLES)}; got "
                      f"{sorted(config.teachers) or 'none'}")
    self.unlabeled = datasets.get_dataset(inp.data, inp.unlabeled_split, inp.get("data_dir"))
    super().__init__(config, workdir, checkpoints)

  def examples_per_epoch(self) -> int:
    return max(len(self.train_data), len(self.unlabeled))


def batches(s: Setup, start: int) -> Iterator[Dict[str, np.ndarray]]:
  """This process's rows of step `start`'s batches on: labelled images and labels, two unlabelled streams
  (their own shuffles, as CPS's two unsupervised loaders) and the CutMix masks of the step."""
  c, inp = s.config, s.config.input
  stream = dict(global_batch=inp.batch_size, start_batch=start, num_threads=inp.num_threads)
  labelled = pipeline.train_batches(s.train_data.source, s.pp_train, seed=c.seed, **stream)
  u0 = pipeline.train_batches(s.unlabeled.source, s.pp_train, seed=c.seed + 1, **stream)
  u1 = pipeline.train_batches(s.unlabeled.source, s.pp_train, seed=c.seed + 2, **stream)
  b, p = pipeline.local_batch_size(inp.batch_size), jax.process_index()
  for step, (x, a, z) in enumerate(zip(labelled, u0, u1), start):
    masks = losses.box_masks(np.random.default_rng([c.seed, step]), inp.batch_size, a["image"].shape[1:3],
                             tuple(c.mgd.cutmix_prop_range), c.mgd.cutmix_boxes)
    yield {"image": x["image"], "label": x["label"], "unlabeled_0": a["image"], "unlabeled_1": z["image"],
           "cutmix": masks[p * b:(p + 1) * b]}


def make_train_step(s: Setup, config: ml_collections.ConfigDict):
  model, tx, m = s.model, s.tx, config.mgd
  teachers = distill.teacher_models(config, s.num_classes)
  supervised = segmentation.make_loss(config)

  def teacher(role, frozen, images):
    if m.teacher_batch_stats:
      out, _ = teachers[role].apply(frozen[role], images, train=True, mutable=["batch_stats"])
    else:
      out = teachers[role].apply(frozen[role], images, train=False)
    return jax.lax.stop_gradient(out)

  def train_step(state: TrainState, batch, frozen):
    mask = batch["cutmix"]
    mixed = losses.mix(batch["unlabeled_0"], batch["unlabeled_1"], mask)
    targets = {}
    for role in ROLES:
      on_0, on_1 = (teacher(role, frozen, batch[k])["logits"] for k in ("unlabeled_0", "unlabeled_1"))
      targets[role] = {"mixed_pseudo": losses.mix(on_0, on_1, mask), "mixed": teacher(role, frozen, mixed),
                       "labelled": teacher(role, frozen, batch["image"])["logits"]}

    rngs = jax.random.split(step_rng(state))

    def loss_fn(params):
      # The official order: the student on the mixed images, then on the labelled ones (BatchNorm statistics).
      out_mixed, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, mixed, train=True,
                                       rngs={"dropout": rngs[0]}, mutable=["batch_stats"])
      out, updates = model.apply({"params": params, "batch_stats": updates["batch_stats"]}, batch["image"],
                                 train=True, rngs={"dropout": rngs[1]}, mutable=["batch_stats"])
      terms = {"sup_loss": supervised(out["logits"], batch["label"])}
      if m.pixel_weight:
        terms["pixel_loss"] = m.pixel_weight * sum(
            losses.cross_pseudo_loss(out_mixed["logits"], targets[r]["mixed_pseudo"])
            + losses.cross_pseudo_loss(out["logits"], targets[r]["labelled"]) for r in ROLES)
      if m.image_weight:
        per_device = m.images_per_device / batch["image"].shape[0]
        terms["image_loss"] = m.image_weight * per_device * losses.image_level_loss(
            out_mixed["logits"], targets["image"]["mixed"]["logits"])
      if m.region_weight:
        terms["region_loss"] = m.region_weight * losses.region_level_loss(
            out_mixed["features"], targets["region"]["mixed"]["features"])
      return sum(terms.values()), (terms, out["logits"], updates["batch_stats"])

    (loss, (terms, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new, grad_norm = update_state(state, grads, loss, batch_stats, tx, config)
    agreement = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets["image"]["labelled"], -1))
    return new, {"loss": loss, "pixel_accuracy": segmentation.pixel_accuracy(logits, batch["label"]),
                 "teacher_agreement": agreement, "grad_norm": grad_norm, **terms}

  return train_step


def load_teachers(s: Setup) -> tuple:
  """The frozen teachers ({'region', 'image'} -> variables) on the mesh, checked against their networks."""
  return loop.frozen_on_mesh(distill.teacher_weights(s.config, s.num_classes, s.image_shape), s.mesh, s.config)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  def prepare(s, batch):
    check_labels(batch, s.num_classes, segmentation.IGNORE)
    return batch

  s, result = loop.train_setup(config, workdir, lambda checkpoints: Setup(config, workdir, checkpoints),
                               lambda s: make_train_step(s, config), prepare, name="mgd train step",
                               extra=load_teachers, batches=batches)
  if jax.process_index() == 0:
    on = [k for k in ("pixel", "image", "region") if config.mgd[f"{k}_weight"]]
    print(f"mgd student {config.model_name} ({', '.join(on) or 'no'} distillation, {len(s.train_data)} labelled / "
          f"{len(s.unlabeled)} unlabelled images): held-out mIoU {result.get('eval/mIoU', float('nan')):.4f} "
          f"({len(s.eval_data)} images, step {int(jax.device_get(s.state.step))})")
  return result


def base_config() -> ml_collections.ConfigDict:
  """The segmentation trainer's fields plus the unlabelled split, the teachers and MGD's losses."""
  c = segmentation.base_config()
  c.name = "mgd"
  c.model_name = "deeplabv3plus_resnet18"
  c.input.unlabeled_split = ""
  c.teachers = ml_collections.ConfigDict(dict(
      region=distill.teacher("deeplabv3plus_wide_resnet50_2"), image=distill.teacher("deeplabv3plus_resnet101")))
  c.mgd = ml_collections.ConfigDict(dict(
      pixel_weight=1.0,          # cross pseudo-labels with each teacher (official: unweighted)
      image_weight=0.001,        # lambda_1 (official Cityscapes; VOC 0.0005)
      region_weight=100.0,       # lambda_2 (official Cityscapes; VOC 50)
      images_per_device=2,       # the official per-GPU batch, which the image-level sum runs over
      cutmix_prop_range=(0.25, 0.5), cutmix_boxes=3,  # CPS's box masks
      teacher_batch_stats=True))  # teachers' BatchNorm on batch statistics (official model.train())
  c.loss.aux_weight = 0.0
  return c
