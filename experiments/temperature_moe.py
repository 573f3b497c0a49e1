"""Parameter-estimation rates of softmax Gaussian mixtures of experts with a temperature (Nguyen, Akbarian &
Ho, "Is Temperature Sample Efficient for Softmax Gaussian Mixture of Experts?", ICML 2024), paper 13.
(inception_zoo/projects/temperature_moe/, README.md there: what is measured, and how).

CPU setting (about 30 s; the activation gate's Voronoi loss falls with slope -0.52 in log n, the
temperature gate's stays flat, +0.01; figure WORKDIR/temperature_moe_rates.png):
  python -m experiments.temperature_moe --config=runlocal --workdir=workdirs/temperature_moe
Full setting: the paper's over-specified simulation (3 experts for 2, n = 1e2...1e5, 20 repetitions).
"""
import ml_collections
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.temperature_moe.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "temperature_moe"
  c.seed = 0
  c.true = ml_collections.ConfigDict(dict(beta1=((2.0,), (0.0,)), beta0=(0.5, 0.0), tau=1.0,
                                          a=((-2.0,), (2.0,)), b=(1.0, -1.0), nu=(0.05, 0.05)))
  c.init_noise = 0.2
  c.tau_init_noise = 0.5
  c.lr = 0.05
  c.restarts = 1
  if arg == "runlocal":
    c.sample_sizes = (100, 400, 1600, 6400)
    c.repetitions = 4
    c.num_experts = 2
    c.total_steps = 800
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or None = the paper's full setting)")
  c.sample_sizes = tuple(int(n) for n in np.geomspace(1e2, 1e5, 12).round())
  c.repetitions = 20
  c.num_experts = 3
  c.restarts = 5  # the authors' earlier code: 5 EM tries per fit
  c.total_steps = 5000
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
