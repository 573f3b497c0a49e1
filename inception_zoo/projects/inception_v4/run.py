"""inception_v4's experiment driver (README.md; the recipes are experiments/inception_v4.py)."""
import json
import os
from typing import Dict, Optional

import ml_collections

from inception_zoo.metrics import read_metrics
from inception_zoo.train import classification
from inception_zoo.utils import plots


PLAIN, RESIDUAL = "inception_v4", "inception_resnet_v2_paper"


def steps_to_target(rows, target: float) -> Optional[int]:
  """First logged step whose mean training loss over the log interval is at most `target`."""
  for r in rows:
    if "train/loss" in r and r["train/loss"] <= target:
      return r["step"]
  return None


def plot(curves: Dict[str, list], target: float, path: str):
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, rows in curves.items():
    style = "-" if label.startswith(RESIDUAL) else "--"
    ax.plot([r["step"] for r in rows], [r["train/loss"] for r in rows], style, label=label)
  ax.axhline(target, color="gray", lw=0.8)
  ax.set(xlabel="step", ylabel="training loss", title="Residual vs plain Inception (digits, 1/8 width)")
  ax.legend(fontsize=8)
  plots.save(fig, path, dpi=120)


def ablation(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  result: Dict[str, float] = {}
  curves = {}
  for model in config.models:
    for seed in config.seeds:
      run = config.copy_and_resolve_references()
      run.model_name, run.seed = model, seed
      tag = f"{model}/seed{seed}"
      final = classification.train_and_evaluate(run, os.path.join(workdir, f"{model}_seed{seed}"))
      rows = [r for r in read_metrics(os.path.join(workdir, f"{model}_seed{seed}")) if "train/loss" in r]
      curves[tag] = rows
      reached = steps_to_target(rows, config.target_loss)
      # Never reaching the target counts as one interval past the end.
      result[f"steps_to_target/{tag}"] = reached or config.total_steps + config.log_every
      result[f"top1/{tag}"] = final["eval/top1"]
  for seed in config.seeds:
    result[f"speedup/seed{seed}"] = (result[f"steps_to_target/{PLAIN}/seed{seed}"]
                                     / result[f"steps_to_target/{RESIDUAL}/seed{seed}"])
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(result, f, indent=2)
  plot(curves, config.target_loss, os.path.join(workdir, "loss_curves.png"))
  print(f"steps to training loss <= {config.target_loss}:")
  for key, value in result.items():
    print(f"  {key}: {value:g}")
  return result
