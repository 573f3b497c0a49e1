"""Wide and deep NTK classifiers (Radhakrishnan, Belkin, Uhler, "Wide and Deep Neural Networks Achieve
Optimality for Classification", arXiv:2204.14126, 2022), paper 20 of the zoo.
(inception_zoo/projects/wide_deep_ntk/, README.md there: what is measured, and how).

CPU setting (about 20 s): the deep ReLU NTK classifier becomes the majority vote (0.993 agreement at
depth 1000), a Hermite a2 h2 + a3 h3 activation becomes 1-NN (1.0 at depth 8); the singular-kernel
activation's test error falls 0.148 -> 0.117 as n grows 100 -> 3,000 while 1-NN stays at 0.19:
  python -m experiments.wide_deep_ntk --config=runlocal --workdir=workdirs/wide_deep_ntk
Full setting: S^4, n up to 20,000, 5 draws.
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.wide_deep_ntk.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="wide_deep_ntk", seed=0, sphere_dim=2, cap=0.3, eta=0.9, num_test=1000, draws=2,
      train_sizes=(100, 300, 1000, 3000), depth_train=100, relu_depths=(1, 10, 100, 1000),
      nn_depths=(2, 4, 8), singular_depths=(10, 100, 300), koenigs_iterations=60))
  if arg == "runlocal":
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none for the full setting)")
  c.update(name="wide_deep_ntk_full", sphere_dim=4, num_test=5000, draws=5,
           train_sizes=(100, 300, 1000, 3000, 10000, 20000), depth_train=300,
           relu_depths=(1, 10, 100, 1000, 3000), singular_depths=(10, 30, 100))
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
