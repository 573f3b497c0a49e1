"""Terminator (Zhang, "HyperZ.Z.W Operator Connects Slow-Fast Networks for Full Context Interaction",
arXiv 2401.17948, 2024), paper 26 of the zoo, on digits as 64-step sequences (1D) and 8x8 images (2D).
(inception_zoo/projects/terminator/, README.md there: what is measured, and how).

CPU setting (about 1 min): the residual-free Terminator reaches 0.856 / 0.919 held-out top-1 on digits
as 64-step sequences / 8x8 images vs 0.256 / 0.664 for a same-size CNN; every layer's features stay
standardised (std 0.99-1.00):
  python -m experiments.terminator --config=runlocal --workdir=workdirs/terminator
Full settings: sequential and permuted MNIST (tfds mnist), width 128, 4 blocks, 60k steps:
  python -m experiments.terminator --workdir=workdirs/terminator_smnist
  python -m experiments.terminator --config=pmnist --workdir=workdirs/terminator_pmnist
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.terminator.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="terminator_digits", data="digits", seed=0, views=("1d", "2d"), width=16, depth=2,
      local_sizes=(3, 5), slow_hidden=32, omega_0=10.0, cnn_width=dict(d1=64, d2=37), learning_rate=3e-3,
      batch_size=64, total_steps=150, log_every=50, models=("terminator", "cnn"), permute=False,
      permutation_seed=0, calibration=0, eval_batch_size=360))  # calibration 0: the whole training set
  if arg == "runlocal":
    return c
  if arg not in (None, "pmnist"):
    raise UserError(f"unknown setting '{arg}' (runlocal, pmnist, or none = sequential MNIST)")
  c.update(name="terminator_pmnist" if arg else "terminator_smnist", data="tfds:mnist", views=("1d",),
           models=("terminator",), width=128, depth=4, learning_rate=1e-3, batch_size=100, total_steps=60_000,
           log_every=500, permute=arg == "pmnist", calibration=2000, eval_batch_size=500)
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
