"""mgd's experiment driver (README.md; the recipes are experiments/mgd.py)."""
import os
from typing import Dict

import ml_collections

from inception_zoo.projects.mgd import train as mgd
from inception_zoo.train import segmentation


def supervised_config(config: ml_collections.ConfigDict, model_name: str, model, steps: int,
                      seed: int) -> ml_collections.ConfigDict:
  """A supervised segmentation run on the experiment's labelled split, optimizer, schedule and loss: a teacher's
  pre-training or the supervised-only student."""
  c = segmentation.base_config()
  for key in ("input", "optimizer", "schedule", "loss", "eval", "mesh"):
    c[key] = ml_collections.ConfigDict(config[key].to_dict())
  del c.input["unlabeled_split"]
  c.update(dict(name=model_name, model_name=model_name, seed=seed, total_steps=steps, log_every=config.log_every,
                checkpoint_every=steps, init_from=config.init_from))
  c.model = ml_collections.ConfigDict(model.to_dict())
  return c


def train(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """The full settings distil into `workdir` from the teachers' weights. The CPU setting (`config.prepare`)
  first trains the two teachers on the labelled split (each in its own workdir under `workdir`), then the
  supervised-only student, the pixel-level-only student (CPS with the teachers) and the MGD student, from the
  same initialisation and data order, and returns every held-out mIoU."""
  if "prepare" not in config:
    return mgd.train_and_evaluate(config, workdir)
  p, out = config.prepare, {}
  for role, seed in zip(mgd.ROLES, p.teacher_seeds):
    t = config.teachers[role]
    t.weights = os.path.join(workdir, f"teacher_{role}")
    result = segmentation.train_and_evaluate(
        supervised_config(config, t.model_name, t.model, p.teacher_steps, seed), t.weights)
    out[f"teacher_{role}/mIoU"] = result["eval/mIoU"]
  result = segmentation.train_and_evaluate(
      supervised_config(config, config.model_name, config.model, config.total_steps, config.seed),
      os.path.join(workdir, "supervised"))
  out["supervised/mIoU"] = result["eval/mIoU"]
  pixel_only = ml_collections.ConfigDict(config.to_dict())
  pixel_only.mgd.update(image_weight=0.0, region_weight=0.0)
  out["pixel_only/mIoU"] = mgd.train_and_evaluate(pixel_only, os.path.join(workdir, "pixel_only"))["eval/mIoU"]
  out["mgd/mIoU"] = mgd.train_and_evaluate(config, os.path.join(workdir, "mgd"))["eval/mIoU"]
  print("mgd shapes: " + ", ".join(f"{k} {v:.4f}" for k, v in out.items()))
  return out
