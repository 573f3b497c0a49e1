"""Neural collapse in deep linear networks (Dang, Tran, Osher, Tran-The, Ho & Nguyen, "Neural Collapse in
Deep Linear Networks: From Balanced to Imbalanced Data", ICML 2023), paper 14 of the zoo.
(inception_zoo/projects/neural_collapse/, README.md there: what is measured, and how).

CPU setting (about 25 s): balanced MSE NC1 < 1e-10 and a simplex ETF to 4e-5; imbalanced bias-free MSE:
orthogonal class means whose norms match the closed form to 0.05%; a digits MLP + deep linear head: NC1
1.21 -> 0.02:
  python -m experiments.neural_collapse --config=runlocal --workdir=workdirs/neural_collapse
Full setting: MNIST / CIFAR-10 with MLP / ResNet-18 backbones and linear heads of depth 1-9.
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.neural_collapse.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "neural_collapse"
  c.seed = 0
  c.ufm = ml_collections.ConfigDict(dict(
      num_classes=4, dim=16, depth=3, per_class=50, imbalanced=(500, 200, 100, 50), lambda_w=1e-3,
      lambda_h=1e-3, lr=0.02, steps=1500))
  c.digits = ml_collections.ConfigDict(dict(hidden=(128, 64), depth=3, loss="mse", lambda_w=1e-4, lr=3e-3,
                                            total_steps=400, log_every=50))
  if arg == "runlocal":
    c.full = ml_collections.ConfigDict()
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or None = the paper's full setting)")
  c.ufm.update(num_classes=10, dim=64, depth=3, per_class=100, imbalanced=(1000, 1000, 500, 500, 250, 250,
                                                                         100, 100, 50, 50), steps=30000)
  # The paper's practical experiments (Sec. 5): not run by this file's CPU path.
  c.full = ml_collections.ConfigDict(dict(datasets=("mnist", "cifar10"), backbones=("mlp", "resnet18"),
                                          head_depths=(1, 3, 6, 9), epochs=200))
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
