"""EAS (Cai, Chen, Zhang, Yu, Wang, "Efficient Architecture Search by Network Transformation", AAAI
2018), paper 11 of the zoo: controller-guided search by function-preserving transformations on digits.
(inception_zoo/projects/eas/, README.md there: what is measured, and how).

CPU setting (about 3.5 min): 48 networks per search grown from a 246-parameter start net (0.69 validation)
reach 0.75-0.81 for both policies; the controller beating random transformations is not reproduced
robustly (8 of 9 seeds on one machine, 3 of 9 on another):
  python -m experiments.eas --config=runlocal --workdir=workdirs/eas
Full setting: CIFAR-10 plain-CNN and DenseNet start nets (tfds cifar10); --config=densenet on digits.
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.eas.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="eas_digits", data="digits", val_size=360, kind="plain", start=(((4, 3),), ((4, 3),)), stem=0,
      transitions=(), widths=(4, 8, 12), kernels=(1, 3), max_layers=4, start_rounds=10, train_steps=30,
      batch_size=32, learning_rate=0.01, num_steps=12, num_samples=4, wider_actions=2, deeper_actions=6,
      controller_lr=0.05, entropy_penalty=1e-5, baseline_decay=0.95, wider_noise=1e-2, seeds=(0, 1, 2), data_seed=0,
      final_epochs=0))
  if arg == "runlocal":
    return c
  if arg not in (None, "densenet"):
    raise UserError(f"unknown setting '{arg}' (runlocal, densenet, or none = the CIFAR-10 plain-CNN search)")
  # 45,000 / 5,000 train / validation as the authors' validation_size; 20 epochs of batch 64 each.
  c.update(name="eas_cifar10_plain", data="tfds:cifar10", val_size=5000, widths=tuple(range(4, 44, 4)),
           kernels=(1, 3, 5), max_layers=12, start=(((16, 3),), ((32, 3),), ((64, 3),)), start_rounds=20,
           train_steps=20 * 45_000 // 64, batch_size=64, num_steps=100, num_samples=10, wider_actions=4,
           deeper_actions=5, controller_lr=2e-3, seeds=(0,), final_epochs=300)
  if arg == "densenet":
    c.update(name="eas_cifar10_densenet", kind="dense", stem=24, transitions=(48, 48),
             start=(((12, 3),) * 4,) * 3, widths=tuple(range(4, 50, 2)), wider_actions=10)
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
