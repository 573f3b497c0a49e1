"""random_pruning's experiment driver (README.md; the recipes are experiments/random_pruning.py)."""
import os
from typing import Dict

import flax.linen as nn
import ml_collections

from inception_zoo.models.mlp import MLP
from inception_zoo.sparsity import training as sparse_training
from inception_zoo.train import classification
from inception_zoo.utils import plots


def build(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The width experiment's network ('mlp': flattened images, `depth` ReLU layers of `width` units), or a
  registered model."""
  if config.model_name == "mlp":
    m = config.model
    return MLP(num_classes, (m.width,) * m.depth, flatten=True, with_features=True)
  return classification.build_classifier(config, num_classes)


TASK = sparse_training.sparse_task(classification.Task(
    build, classification.make_train_step, classification.make_eval_step,
    classification.classification_summary))


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """The full setting: one run. The CPU setting: dense and sparse at every width, same seed."""
  if not config.widths or config.mode != "train":
    return classification.run(config, workdir, TASK)
  result: Dict[str, float] = {}
  for width in config.widths:
    for kind in ("dense", "sparse"):
      c = ml_collections.ConfigDict(config.to_dict())
      c.model.width = width
      c.sparsity.method = config.sparsity.method if kind == "sparse" else ""
      out = classification.train_and_evaluate(c, os.path.join(workdir, f"w{width}_{kind}"), TASK)
      result[f"{kind}/w{width}"] = out["eval/top1"]
    result[f"gap/w{width}"] = result[f"dense/w{width}"] - result[f"sparse/w{width}"]
  plot(config, result, os.path.join(workdir, "random_pruning_width.png"))
  return result


def plot(config, result: Dict[str, float], path: str):
  plt = plots.pyplot()
  widths = list(config.widths)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for kind in ("dense", "sparse"):
    sparse = f"{config.sparsity.method.upper()} {config.sparsity.sparsity:.0%} sparse"
    label = "dense" if kind == "dense" else sparse
    ax.plot(widths, [result[f"{kind}/w{w}"] for w in widths], "o-", label=label)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("hidden width")
  ax.set_ylabel("held-out top-1 (digits)")
  ax.legend()
  plots.save(fig, path)
