"""Prob-PSENN (Vadillo, Santana, Lozano, Kwiatkowska, "Uncertainty-Aware Explanations Through
Probabilistic Self-Explainable Neural Networks", arXiv 2403.13740, 2024), paper 27 of the zoo, on digits.
(inception_zoo/projects/prob_psenn/, README.md there: what is measured, and how).

CPU setting (about 30 s): digits accuracy 0.983 (point) / 0.981 (probabilistic prototypes); mutual
information separates out-of-distribution inputs, AUROC inverted 0.96, rotated 0.81, noise 0.85, patches 0.90:
  python -m experiments.prob_psenn --config=runlocal --workdir=workdirs/prob_psenn
Full setting: MNIST / Fashion-MNIST / K-MNIST via tfds.
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.prob_psenn.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="prob_psenn_digits", data="digits", seed=0, hidden=(128,), latent_dim=16, prototypes_per_class=1,
      sigma_init=0.5, prior_std=1.0, kl_weight=1.0, train_samples=8, test_samples=64,
      loss_weights=dict(ce=20.0, recon=1.0, r1=1.0, r2=1.0), learning_rate=5e-3, total_steps=1000,
      log_every=500, patch_scale=4, ood_sets=("inverted", "rotated", "noise", "patches")))
  if arg == "runlocal":
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = MNIST; --config.data=tfds:fashion_mnist "
                    f"or tfds:kmnist for the others)")
  c.update(name="prob_psenn_mnist", data="tfds:mnist", hidden=(512, 256), latent_dim=40, total_steps=5000,
           learning_rate=1e-3)
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
