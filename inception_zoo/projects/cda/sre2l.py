"""SRe2L / CDA at ImageNet scale: recovery in batches written to the workdir as they finish, and the
relabelled student trained on the classification trainer's loop.

Yin, Xing and Shen, "Squeeze, Recover and Relabel", NeurIPS 2023; Yin and Shen, "Dataset Distillation
via Curriculum Data Synthesis in Large Data Era", TMLR 2024 (arXiv:2311.18838). The official scripts
(VILA-Lab/SRe2L `CDA/recover_cda_in1k.py`, `SRe2L/validate/train_FKD.py` and `.sh`) fix the layout:
- Squeeze: a pre-trained BatchNorm classifier (torchvision's ResNet-18, IMAGENET1K_V1), here the zoo's
  `resnet18` holding weights converted by `python -m inception_zoo.convert` (`config.init_from`).
- Recover (`recover_to_dir`): the set is recovered in batches of `recover_batch_size` classes with one
  image each (the official loops `ipc_id` outside and blocks of 100 classes inside), every batch from its
  own noise for `recover_steps` steps (dataset.recover). Each finished batch is written at once to
  WORKDIR/recovered/batch_NNNNN.npz (uint8 pixels, labels) under a temporary name and renamed, so a file
  with the final name is always whole; a re-run skips the batches already written (its resume: nothing
  finished is recomputed; a batch cut off mid-way starts over). Batch k's noise and views come from
  fold_in(seed, k), so a resumed run writes the same files as an uninterrupted one. Each batch compiles
  its loop anew (fullbatch.fit jits a closure over the batch's labels, key and the teacher); the cost of
  that against 4,000 ResNet-18 steps was not measured here.
- Relabel and train (`FKD`): the student trains on RandomResizedCrop(0.08, 1) + flip views of the recovered
  set (the pp string's `inception_crop(224, 8, 100)|flip_lr`), CutMix in the official command, each view's
  target the frozen teacher's softmax at temperature T on that same view, KL without T^2 (train_FKD.py:
  KLDivLoss(batchmean), -T 20). The official precomputes these soft labels per epoch (FKD); the teacher
  here scores each batch in the step, the same targets without the files. As a `classification.Task` the
  student gets the shared loop: sharding, checkpoints, resume, NaN stop, evaluation on the source
  dataset's held-out split through its own loader.

The recovered set is a dataset by name (`RECOVERED`): `data="recovered"`, `data_dir=` the recovered
directory; its train split is the batch files, any other split is the split of the dataset it was
distilled from (named in the directory's manifest), so `input.eval_split="validation"` scores on ImageNet.
"""
import json
import logging
import os
from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception_zoo.data import datasets
from inception_zoo.projects.cda import dataset
from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter
from inception_zoo.train import classification, distill, mixup
from inception_zoo.train.state import TrainState, step_rng

RECOVERED = "recovered"
MANIFEST = "manifest.json"


# --- the recovered set on disk ---------------------------------------------------------------------


def batch_path(directory: str, k: int) -> str:
  return os.path.join(directory, f"batch_{k:05d}.npz")


def batch_labels(k: int, num_classes: int, batch_size: int) -> np.ndarray:
  """Classes of batch k: block k mod blocks of `batch_size` classes (the last block may be shorter),
  image number k // blocks of each class (the official loop order)."""
  blocks = -(-num_classes // batch_size)
  start = (k % blocks) * batch_size
  return np.arange(start, min(start + batch_size, num_classes), dtype=np.int32)


def to_uint8(images, mean, std) -> np.ndarray:
  """Teacher-input pixels ((x / 255 - mean) / std per channel) back to uint8 for the image files."""
  x = np.asarray(images, np.float32) * np.float32(std) + np.float32(mean)
  return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def _write_atomic(path: str, **arrays):
  tmp = path + ".partial"
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)  # atomic: the final name never holds a half-written file


def _manifest(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  return {"data": config.data, "data_dir": config.get("data_dir"), "num_classes": config.num_classes,
          "ipc": config.ipc, "image_size": config.image_size, "batch_size": config.recover_batch_size,
          "milestone": config.milestone, "recover_steps": config.recover_steps, "seed": config.seed,
          "teacher": config.teacher, "teacher_model": config.teacher_model.to_dict(),
          "teacher_weights": config.init_from}


def num_batches(ipc: int, num_classes: int, batch_size: int) -> int:
  """Batch files of a set of `ipc` images per class recovered `batch_size` classes at a time."""
  return ipc * -(-num_classes // batch_size)


def _teacher(config: ml_collections.ConfigDict, image_shape):
  """(model, variables) of the squeezed teacher, loaded by the distillation trainer's loader."""
  cfg = student_config(config)
  model = distill.teacher_models(cfg, config.num_classes)["teacher"]
  return model, distill.teacher_weights(cfg, config.num_classes, image_shape)["teacher"]


def recover_to_dir(config: ml_collections.ConfigDict, directory: str,
                   writer: MetricWriter | None = None) -> Dict[str, int]:
  """Recovers the set batch by batch into `directory`, skipping the batches already there. Returns
  {'recovered': batches done by this call, 'skipped': batches found finished}."""
  os.makedirs(directory, exist_ok=True)
  # as JSON reads it back (tuples become lists), so an unchanged config compares equal on resume
  manifest, path = json.loads(json.dumps(_manifest(config))), os.path.join(directory, MANIFEST)
  if os.path.exists(path):
    with open(path) as f:
      before = json.load(f)
    changed = sorted(k for k in manifest if before.get(k) != manifest[k])
    if changed:
      raise UserError(f"{directory} holds a set recovered with another {changed[0]} "
                      f"({before.get(changed[0])!r}, now {manifest[changed[0]]!r}); use a new workdir")
  else:
    with open(path + ".partial", "w") as f:
      json.dump(manifest, f, indent=2)
    os.replace(path + ".partial", path)
  size, mean, std = config.image_size, np.float32(config.pixel_mean), np.float32(config.pixel_std)
  image_shape = (size, size, len(mean))
  total = num_batches(config.ipc, config.num_classes, config.recover_batch_size)
  todo = [k for k in range(total) if not os.path.exists(batch_path(directory, k))]
  done = total - len(todo)
  if done:
    logging.info("%s: %d of %d batches already recovered, skipped", directory, done, total)
  if todo:
    model, variables = _teacher(config, image_shape)
  key = jax.random.key(config.seed)
  for k in todo:
    labels = jnp.asarray(batch_labels(k, config.num_classes, config.recover_batch_size))
    images = dataset.recover(
        model, variables, labels, jax.random.fold_in(key, k)[None], [config.milestone],
        image_shape=image_shape, num_steps=config.recover_steps, mode=config.curriculum,
        lowest=config.min_crop_scale, learning_rate=config.recover_lr, r_bn=config.r_bn,
        first_multiplier=config.first_bn_multiplier, jitter=config.jitter,
        # the valid pixels [0, 1] in the teacher's normalised input, per channel (official `clip`)
        value_range=(-mean / std, (1 - mean) / std), writer=writer, log_every=config.log_every)[0]
    _write_atomic(batch_path(directory, k), image=to_uint8(images, mean, std), label=np.asarray(labels))
    logging.info("recovered batch %d of %d", k + 1, total)
  return {"recovered": len(todo), "skipped": done}


def recovered_dataset(split: str, data_dir: str | None = None) -> datasets.Dataset:
  """The dataset `RECOVERED` (see the module docstring); `data_dir` is the recovered directory."""
  if not data_dir or not os.path.exists(os.path.join(data_dir, MANIFEST)):
    raise UserError(f"dataset '{RECOVERED}' needs input.data_dir = a directory of recovered batches "
                    f"(with {MANIFEST}); got {data_dir!r}")
  with open(os.path.join(data_dir, MANIFEST)) as f:
    manifest = json.load(f)
  if split != "train":
    return datasets.get_dataset(manifest["data"], split, manifest.get("data_dir"))
  n = num_batches(manifest["ipc"], manifest["num_classes"], manifest["batch_size"])
  missing = [k for k in range(n) if not os.path.exists(batch_path(data_dir, k))]
  if missing:
    raise UserError(f"{data_dir} holds {n - len(missing)} of {n} recovered batches (batch {missing[0]} "
                    f"is missing): finish the recovery first")
  files = [np.load(batch_path(data_dir, k)) for k in range(n)]
  return datasets.Dataset(datasets.ArraySource(np.concatenate([f["image"] for f in files]),
                                               np.concatenate([f["label"] for f in files])),
                          manifest["num_classes"])


datasets.register_dataset(RECOVERED, recovered_dataset)


# --- the relabelled student ------------------------------------------------------------------------


def make_train_step(model, tx, schedule, config: ml_collections.ConfigDict):
  """FKD's step: the teacher's softened outputs on the (CutMixed) views are the only target."""
  teachers = distill.teacher_models(config, model.num_classes)
  temperature = config.relabel.temperature

  def train_step(state: TrainState, batch, frozen):
    rng = step_rng(state)
    images, _ = mixup.mix_batch(jax.random.fold_in(rng, 1), batch["image"], batch["label"],
                                model.num_classes, 0.0, config)
    _, teacher_logits = distill.teacher_targets(teachers, frozen, images)

    def loss_fn(params):
      (logits, _), updates = model.apply({"params": params, "batch_stats": state.batch_stats}, images,
                                         train=True, mutable=["batch_stats"], rngs={"dropout": rng})
      return dataset.soft_label_loss(logits, teacher_logits, temperature), (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new, grad_norm = classification.update_state(state, grads, loss, batch_stats, tx, config)
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
               "teacher_agreement": jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(teacher_logits, -1))}
    return new, metrics

  return train_step


def summary(config, result: Dict[str, float], num_images: int, step: int) -> str:
  return (f"{config.model_name} student of the recovered set: held-out top-1 {result['eval/top1']:.4f} "
          f"({num_images} images, step {step})")


FKD = classification.Task(classification.build_classifier, make_train_step, classification.make_eval_step,
                          summary, frozen=distill.load_teachers)


def student_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The student's classification config: `config.student` with the recovered set as its data and the
  squeezed teacher as its only teacher (the student itself starts from random weights)."""
  c = distill.base_config()
  c.teachers = ml_collections.ConfigDict(
      {"teacher": distill.teacher(config.teacher, config.init_from, **config.teacher_model.to_dict())})
  c.relabel = ml_collections.ConfigDict(dict(temperature=config.temperature))
  c.update(config.student)  # nested: the fields it names, the trainer's defaults for the rest
  c.update(name=f"{config.name}_student", seed=config.seed, num_classes=config.num_classes)
  return c


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """Recover (resuming batch by batch), then train and evaluate the student (resuming from its
  checkpoints) in WORKDIR/student."""
  if not config.init_from:
    raise UserError("config.init_from is empty: the teacher's weights (`python -m inception_zoo.convert "
                    "--timm resnet18 ...`) are what the set is recovered from")
  cfg = student_config(config)
  datasets.get_dataset(config.data, cfg.input.eval_split, config.get("data_dir"))  # fails before hours of recovery
  directory = os.path.join(workdir, "recovered")
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  counts = recover_to_dir(config, directory, writer)
  writer.close()
  cfg.input.update(data=RECOVERED, data_dir=directory, train_split="train")
  result = classification.train_and_evaluate(cfg, os.path.join(workdir, "student"), FKD)
  return {**result, **{f"recover/{k}": float(v) for k, v in counts.items()}}
