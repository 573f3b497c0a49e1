"""meal_v2's experiment driver (README.md; the recipes are experiments/meal_v2.py)."""
import os
from typing import Dict

import ml_collections

from inception_zoo.train import classification, distill


def ce_config(config: ml_collections.ConfigDict, model_name: str, model, steps: int, seed: int,
              schedule: ml_collections.ConfigDict, init_from: str = "") -> ml_collections.ConfigDict:
  """A classification run on the experiment's data and optimizer: a teacher, the student's baseline,
  or the CE control."""
  c = classification.base_config()
  c.update(dict(name=model_name, model_name=model_name, seed=seed, total_steps=steps, init_from=init_from,
                log_every=config.log_every, checkpoint_every=steps))
  c.mesh = ml_collections.ConfigDict(config.mesh.to_dict())
  c.model = ml_collections.ConfigDict(model.to_dict())
  c.input = ml_collections.ConfigDict(config.input.to_dict())
  c.optimizer = ml_collections.ConfigDict(config.optimizer.to_dict())
  c.schedule = ml_collections.ConfigDict(schedule.to_dict())
  return c


def train(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """The full setting distils into `workdir`. The CPU setting trains the teachers and the student
  baseline first (each in its own workdir under `workdir`), then the distilled student and the CE
  control, and returns every held-out top-1 and NLL."""
  if "prepare" not in config:
    return distill.run(config, workdir)
  p, out = config.prepare, {}
  pretrain = ml_collections.ConfigDict(dict(name="cosine", base_lr=p.base_lr, warmup_epochs=0.0,
                                            end_lr_fraction=0.0))

  def record(name, result):
    out[f"{name}/top1"], out[f"{name}/nll"] = result["eval/top1"], result["eval/loss"]

  for (name, t), seed in zip(sorted(config.teachers.items()), p.teacher_seeds):
    t.weights = os.path.join(workdir, f"teacher_{name}")
    record(f"teacher_{name}", classification.train_and_evaluate(
        ce_config(config, t.model_name, t.model, p.teacher_steps, seed, pretrain), t.weights))
  baseline = os.path.join(workdir, "student_baseline")
  record("baseline", classification.train_and_evaluate(
      ce_config(config, config.model_name, config.model, p.student_steps, config.seed, pretrain), baseline))
  config.init_from = baseline
  record("distilled", distill.train_and_evaluate(config, os.path.join(workdir, "distilled")))
  record("ce_continued", classification.train_and_evaluate(
      ce_config(config, config.model_name, config.model, config.total_steps, config.seed,
                config.schedule, init_from=baseline), os.path.join(workdir, "ce_continued")))
  print("meal_v2 digits: " + ", ".join(f"{k} {v:.4f}" for k, v in out.items()))
  return out
