"""Random pruning at initialisation (Liu et al., "The Unreasonable Effectiveness of Random Pruning:
Return of the Most Naive Baseline for Sparse Training", ICLR 2022), paper 16 of the zoo
(inception_zoo/projects/random_pruning/, README.md there: what is measured, and how).

CPU setting (about 70 s; figure WORKDIR/random_pruning_width.png): digits MLPs, ERK masks at 90% vs dense
from the same seed: the gap falls 0.67 / 0.49 / 0.11 / 0.017 at widths 8 / 32 / 128 / 512:
  python -m experiments.random_pruning --config=runlocal --workdir=workdirs/random_pruning_digits
Full setting: Wide ResNet-50-2 on ImageNet, ERK 50% fixed masks, the authors' recipe:
  python -m experiments.random_pruning --workdir=WORKDIR --config.input.data_dir=TFDS_DIR   # = --config=wrn50
"""
import ml_collections

from experiments.common import digits, imagenet
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.random_pruning.run import TASK, run  # noqa: F401  (TASK: the sharding plan's)
from inception_zoo.train import classification


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
