"""Residual connections accelerate the training of Inception networks (paper 1's central claim, Figs.
21-26; inception_zoo/projects/inception_v4/, README.md there: what is measured, and how).

CPU setting (about 5 min; WORKDIR/loss_curves.png, summary.json): Inception-ResNet-v2 (Fig. 15) brings the
training loss under 1.2 in about half the steps of Inception-v4, on both seeds (make reproduce asserts it):
  python -m experiments.inception_residual_ablation --config=runlocal --workdir=workdirs/residual_ablation
Full setting: both networks on ImageNet with the paper's recipe; compare with Figs. 24-25:
  python -m experiments.inception_residual_ablation --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
"""
from typing import Optional

import ml_collections

from experiments.common_inception import inception_config
from inception_zoo.main import run_experiment
from inception_zoo.projects.inception_v4.run import PLAIN, RESIDUAL, ablation


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


def main(argv=None):
  return run_experiment(get_config, ablation, argv)


if __name__ == "__main__":
  main()
