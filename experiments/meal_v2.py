"""MEAL V2 (Shen & Savvides, "MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on ImageNet
without Tricks", arXiv:2009.08453), paper 12 of the zoo: a pre-trained student distilled from the
averaged softmax of a teacher ensemble, KL plus a discriminator on the final outputs, no hard labels
(inception_zoo/projects/meal_v2/, README.md there: what is measured, and how).

CPU setting (about 1.5 min): two ResNet-14 teachers (0.983 / 0.969) distilled without labels into a
ResNet-8 started from its CE baseline: 0.878 -> 0.944 held-out top-1, NLL 0.52 -> 0.15:
  python -m experiments.meal_v2 --config=runlocal --workdir=workdirs/meal_v2_digits
ImageNet-1k, ResNet-50 from converted timm weights, teachers resnet152s and senet154 (paper 80.67%):
  python -m experiments.meal_v2 --workdir=WORKDIR --config.input.data_dir=TFDS_DIR \\
      --config.init_from=RESNET50_DIR --config.teachers.t0.weights=RESNET152S_DIR \\
      --config.teachers.t1.weights=SENET154_DIR
A classifier started from the distilled student:
  python -m experiments.<name> ... --config.init_from=WORKDIR --config.init_from_scope=student
"""
import ml_collections

from experiments.common import digits, imagenet
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.meal_v2.run import train
from inception_zoo.train import distill


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = distill.base_config()
  if arg == "runlocal":
    c.name = "meal_v2_digits"
    c.model_name = "resnet20"
    c.model = ml_collections.ConfigDict(dict(depth=8, widths=(4, 8, 16)))
    digits(c)
    c.teachers = ml_collections.ConfigDict(dict(
        t0=distill.teacher("resnet20", depth=14, widths=(8, 16, 32)),
        t1=distill.teacher("resnet20", depth=14, widths=(8, 16, 32))))
    c.distill.discriminator_reduction = 2  # 10 -> 5 -> 2 -> 2
    c.schedule = ml_collections.ConfigDict(dict(name="constant", base_lr=0.05, warmup_epochs=0.0))
    c.total_steps = 100
    c.log_every = 25
    c.checkpoint_every = 100
    # What the experiment trains first (teachers, student baseline) with CE; the weights directories
    # of the config above are filled in from their workdirs.
    c.prepare = ml_collections.ConfigDict(dict(teacher_steps=120, student_steps=40, teacher_seeds=(0, 1),
                                               base_lr=0.1))
    return c
  if arg not in (None, "resnet50"):
    raise UserError(f"unknown setting '{arg}' (runlocal, resnet50)")
  c.name = "meal_v2_resnet50"
  c.model_name = "resnet50"
  c.teachers = ml_collections.ConfigDict(dict(
      t0=distill.teacher("resnet152s"),  # gluon_resnet152_v1s, the paper's second teacher
      t1=distill.teacher("senet154")))  # gluon_senet154, the paper's first teacher
  # Student and teachers start from timm's weights, trained on ImageNet mean/std-normalised pixels.
  imagenet(c, size=224, eval_resize=256, batch_size=512, num_epochs=180.0, crop="area_min=8",
           norm="normalize")
  c.schedule = ml_collections.ConfigDict(dict(name="multistep", base_lr=0.01, warmup_epochs=0.0,
                                               milestones=(100.0,), decay_rate=0.1))
  return c


def main(argv=None):
  return run_experiment(get_config, train, argv)


if __name__ == "__main__":
  main()
