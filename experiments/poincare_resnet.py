"""Poincare ResNet (van Spengler, Berkhout, Mettes, "Poincare ResNet", ICCV 2023), paper 19 of the zoo.
(inception_zoo/projects/poincare_resnet/, README.md there: what is measured, and how).

CPU setting (about 30 s): through 40 Poincare FC layers the identity init keeps the mean distance to the
origin at 3.256 while the standard init collapses it to 2e-15; a one-block Poincare ResNet reaches 0.917
held-out top-1 on digits:
  python -m experiments.poincare_resnet --config=runlocal --workdir=workdirs/poincare_resnet
Full setting: Poincare ResNet-20 / 32 on CIFAR-10 / 100:
  python -m experiments.poincare_resnet --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.poincare_resnet.run import run
from inception_zoo.train import classification

SETTINGS = ("runlocal", "resnet20_cifar10", "resnet32_cifar10", "resnet20_cifar100", "resnet32_cifar100")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  model = dict(depth=20, widths=(8, 16, 32), c=0.1, id_init=True, use_midpoint=True)
  if arg == "runlocal":
    # Its own loop (train/fullbatch.fit on in-memory digits), so none of the trainer's input fields;
    # total_steps / log_every / mesh.data keep the zoo's usual overrides working.
    return ml_collections.ConfigDict(dict(
        name="poincare_resnet", seed=0, model={**model, "depth": 4, "widths": (16,)},
        norms=dict(depth=40, dim=16, num_points=256, max_radius=0.9, seed=0),
        digits=dict(batch_size=64, lr=1e-2), total_steps=150, log_every=75, mesh=dict(data=1)))
  c = classification.base_config()
  c.model_name = "poincare_resnet"
  c.model = ml_collections.ConfigDict(model)
  arg = arg or "resnet20_cifar10"
  if arg not in SETTINGS:
    raise UserError(f"unknown setting '{arg}' ({', '.join(SETTINGS)}; default resnet20_cifar10)")
  depth, data = arg.split("_")
  c.name = f"poincare_{arg}"
  c.model.depth = int(depth[len("resnet"):])
  c.input.update(data=f"tfds:{data}", train_split="train", eval_split="test", batch_size=128,
                 eval_batch_size=1000, num_threads=16,
                 pp_train="decode|random_crop(32, pad=4)|flip_lr|value_range(-1, 1)",
                 pp_eval="decode|value_range(-1, 1)")
  c.num_epochs = 500.0
  c.optimizer.update(name="adam", weight_decay=1e-4, wd_mask=r".*")
  c.schedule.update(name="constant", base_lr=1e-3)
  c.log_every = 100
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
