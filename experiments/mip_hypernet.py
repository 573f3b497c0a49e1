"""Magnitude invariant parametrizations (MIP) for hypernetworks (Ortiz, Guttag, Dalca, ICLR 2024),
paper 10 of the zoo.
(inception_zoo/projects/mip_hypernet/, README.md there: what is measured, and how).

CPU setting (about 45 s; figure WORKDIR/mip_convergence.png): 3 Adam learning rates x 5 seeds, steps to
training loss 0.5: MIP 117 / 81 / 22 vs baseline >200 / 184 / 81:
  python -m experiments.mip_hypernet --config=runlocal --workdir=workdirs/mip_hypernet
Full setting: 5 learning rates x 10 seeds, 5,000 steps.
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.mip_hypernet.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "mip_hypernet_digits"
  c.width = 32
  c.hidden = (16, 64)
  c.gammas_per_step = 8
  c.log10_lambda = (-5.0, -1.0)  # lambda(gamma) = 10^(a + (b - a) gamma)
  c.target_loss = 0.5
  if arg == "runlocal":
    c.learning_rates = (3e-4, 1e-3, 3e-3)
    c.seeds = 5
    c.total_steps = 200
    c.gammas_per_step = 4
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none for the full study)")
  c.learning_rates = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
  c.seeds = 10
  c.total_steps = 5000
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
