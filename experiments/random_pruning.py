"""Random pruning at initialisation (Liu et al., "The Unreasonable Effectiveness of Random Pruning:
Return of the Most Naive Baseline for Sparse Training", ICLR 2022), paper 16 of the zoo.

CPU, embedded digits (about 70 s on 2 cores): the paper's width claim (Sec. 4.1, Fig. 1-2: the gap
between a randomly pruned network trained sparse and its dense equivalent shrinks as the network gets
wider) on MLPs of several widths, each trained dense and with ERK masks at 90% sparsity from the same
seed and data order; returns the dense / sparse held-out accuracies and gaps per width, and plots them
to WORKDIR/random_pruning_width.png:
  python -m experiments.random_pruning --config=runlocal --workdir=workdirs/random_pruning_digits
Measured here (held-out top-1, dense / sparse): width 8 0.850 / 0.181, 32 0.958 / 0.469, 128 0.972 / 0.867,
512 0.981 / 0.964: gaps 0.67, 0.49, 0.11, 0.017.

ImageNet-1k, the paper's headline (Sec. 4.3, Table 3): a Wide ResNet-50-2 randomly pruned with ERK
and trained sparse (masks fixed) with the dense network's recipe; prepare
`tfds build imagenet2012 --manual_dir=...` first:
  python -m experiments.random_pruning --workdir=WORKDIR --config.input.data_dir=TFDS_DIR   # = --config=wrn50
Full setting: ERK masks at sparsity 0.5 (Table 3 reports several sparsities; ERK ~0.5-0.6 is where
the sparse WRN-50 matches or beats the dense one), every conv and linear kernel masked, the first
convolution and classifier included (the authors' sparselearning `Masking.add_module`). The recipe is
the authors' ImageNet/main.py (VITA-Group/Random_Pruning): SGD with momentum 0.9, weight decay 1e-4
on the kernels (none on BN), lr 0.1 with 5 epochs of linear warm-up then divided by 10 at epochs
30 / 60 / 80, label smoothing 0.1, 90 epochs (its default), 224 px random-resized crops. The global
batch is 256 here; the repository's example command runs 2 GPUs x 64 at the same lr 0.1.
Set --config.sparsity.method=er|uniform and --config.sparsity.sparsity=... for the other rows.

CPU setting (`--config=runlocal`): scikit-learn's 8x8 digits (1,437 train / 360 held-out images),
flattened; two-hidden-layer ReLU MLPs of widths 8, 32, 128 and 512; SGD with momentum 0.9, lr 0.1 with
cosine decay, weight decay 5e-4 (the paper's CIFAR recipe) for 150 steps of batch 64 (7 epochs);
sparse runs use ERK at 90% over all three kernels (masks in the optimizer state, first forward pass
already masked: the task is wrapped by `inception_zoo.sparsity.training.sparse_task`).
"""
import os
from typing import Dict

import flax.linen as nn
import ml_collections

from experiments.common import digits, imagenet
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.sparsity import training as sparse_training
from inception_zoo.train import classification
from inception_zoo.utils import plots


class MLP(nn.Module):
  """The width experiment's network: flatten, `depth` ReLU layers of `width` units, a linear head."""
  num_classes: int = 10
  width: int = 128
  depth: int = 2

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    h = x.reshape(x.shape[0], -1)
    for i in range(self.depth):
      h = nn.relu(nn.Dense(self.width, name=f"fc{i}")(h))
    return nn.Dense(self.num_classes, name="head")(h), {"pre_logits": h}


def build(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  if config.model_name == "mlp":
    return MLP(num_classes=num_classes, **config.model.to_dict())
  return classification.build_classifier(config, num_classes)


TASK = sparse_training.sparse_task(classification.Task(
    build, classification.make_train_step, classification.make_eval_step,
    classification.classification_summary))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = classification.base_config()
  c.sparsity = ml_collections.ConfigDict(dict(method="erk", sparsity=0.9, include=r".*kernel", exclude=""))
  if arg == "runlocal":
    c.name = "random_pruning_digits"
    c.model_name = "mlp"
    c.model = ml_collections.ConfigDict(dict(width=128, depth=2))
    c.widths = (8, 32, 128, 512)
    digits(c, rgb=False, eval_batch_size=360, num_threads=1)
    c.total_steps = 150
    c.optimizer.update(name="sgd", momentum=0.9, weight_decay=5e-4)
    c.schedule.update(name="cosine", base_lr=0.1)
    c.log_every = 150
    c.checkpoint_every = 10_000
    c.keep_checkpoints = 1
    c.mesh.data = 1
    return c
  if arg not in (None, "wrn50"):
    raise UserError(f"unknown setting '{arg}' (runlocal, or wrn50 = the default)")
  c.name = "random_pruning_wrn50_erk"
  c.model_name = "wide_resnet50_2"
  c.widths = ()
  c.sparsity.sparsity = 0.5
  c.optimizer.update(name="sgd", momentum=0.9, weight_decay=1e-4, wd_mask=r".*kernel")
  c.schedule = ml_collections.ConfigDict(dict(
      name="multistep", base_lr=0.1, decay_rate=0.1, milestones=(30, 60, 80), warmup_epochs=5.0,
      end_lr_fraction=0.0))
  c.label_smoothing = 0.1
  imagenet(c, size=224, eval_resize=256, batch_size=256, num_epochs=90.0)
  return c


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
