"""Residual connections accelerate the training of Inception networks (paper 1's central claim).

"We give clear empirical evidence that training with residual connections accelerates the training of
Inception networks significantly" (Szegedy et al., 2016, abstract; Figs. 21-26 compare Inception-v4 with
Inception-ResNet-v2 of similar cost). This experiment trains both with the same recipe, data and seeds
and reports the number of steps each needs to bring the training loss under a target.

CPU (about 4 minutes on 2 cores; Inception-ResNet-v2 reaches the target in about half the steps):
  python -m experiments.inception_residual_ablation --config=runlocal --workdir=workdirs/residual_ablation
ImageNet-1k with the paper's recipe (both networks, one seed; compare against Figs. 24-25):
  python -m experiments.inception_residual_ablation --workdir=WORKDIR --config.input.data_dir=TFDS_DIR

Writes `summary.json` and `loss_curves.png` in the workdir, one sub-workdir per (model, seed).
"""
import json
import os
from typing import Dict, Optional

import ml_collections

from experiments.common_inception import inception_config
from inception_zoo.main import run_experiment
from inception_zoo.metrics import read_metrics
from inception_zoo.train import classification
from inception_zoo.utils import plots

PLAIN, RESIDUAL = "inception_v4", "inception_resnet_v2_paper"


def get_config(arg: Optional[str] = None) -> ml_collections.ConfigDict:
  c = inception_config(PLAIN, arg)
  c.name = "inception_residual_ablation"
  c.models = (PLAIN, RESIDUAL)  # the paper's pair of similar cost (Figs. 24-25)
  if arg == "runlocal":
    c.seeds = (0, 1)
    c.total_steps = 150
    c.log_every = 10
    c.checkpoint_every = 0
    c.target_loss = 1.2  # chance is ln(10) = 2.3 plus label smoothing
  else:
    c.seeds = (0,)
    c.target_loss = 2.5
  return c


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


def main(argv=None):
  return run_experiment(get_config, ablation, argv)


if __name__ == "__main__":
  main()
