"""Robust CBC (Saralajew, Rana, Villmann, Shaker, "A Robust Prototype-Based Network with Interpretable
RBF Classifier Foundations", AAAI 2025), paper 28 of the zoo: the shallow setting on digits.
(inception_zoo/projects/robust_cbc/, README.md there: what is measured, and how).

CPU setting (about 30 s): a shallow stable CBC on digits; the robust loss certifies 0.57 / 0.34 at eps 0.4 /
0.6 vs 0.45 / 0.15 with the margin loss, at 0.928 vs 0.917 accuracy; PGD flips none of the certified points:
  python -m experiments.robust_cbc --config=runlocal --workdir=workdirs/robust_cbc
Full setting: deep CBC on CUB-200-2011 / Cars / Pets and shallow MNIST (config only).
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.robust_cbc.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="robust_cbc_digits", data="digits", seed=0, num_components=20, concepts_per_class=1,
      sigma_init=2.0, learning_rate=0.02, total_steps=500, robust_steps=1500, log_every=500, cbc_margin=0.3,
      robust_margin=1.0, eps=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0), pgd_eps=0.4, pgd_steps=20,
      backbone="", image_size=0))
  if arg == "runlocal":
    return c
  if arg == "mnist":
    c.update(name="robust_cbc_mnist", data="mnist", concepts_per_class=2, sigma_init=58.0,
             learning_rate=5e-3, robust_margin=1.58, eps=(0.5, 1.0, 1.58), pgd_eps=1.58, total_steps=40 * 469,
             robust_steps=40 * 469)
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, mnist, or none = the deep CUB-200 setting)")
  c.update(name="deep_cbc_cub200", data="cub200_2011", backbone="convnext_tiny", image_size=224,
           concepts_per_class=2, num_components=200 * 2, total_steps=0, robust_steps=0)
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
