"""HAWQ (Dong, Yao, Gholami, Mahoney, Keutzer, "HAWQ: Hessian AWare Quantization of Neural Networks
with Mixed-Precision", ICCV 2019), paper 34 of the zoo: Hessian-guided mixed precision against uniform
precision (and the reversed ranking) at equal model size.
(inception_zoo/projects/hawq/, README.md there: what is measured, and how).

CPU setting (about 1.5 min): ResNet-20 on digits at the size of uniform 2-bit weights: Hessian-guided
mixed precision 0.986 held-out top-1 (= full precision) vs uniform 2-bit 0.853, reversed ranking 0.881:
  python -m experiments.hawq --config=runlocal --workdir=workdirs/hawq_digits
Full settings: the paper's ResNet-20 / CIFAR-10, ResNet-50 and Inception-v3 / ImageNet ratios:
  python -m experiments.hawq --config=resnet20_cifar10 --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
  python -m experiments.hawq --config=resnet50_i1k --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
  python -m experiments.hawq --config=inception_v3_i1k --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
"""
import ml_collections

from experiments.common import digits
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.hawq.run import train
from inception_zoo.train import qat


SETTINGS = ("runlocal", "resnet20_cifar10", "resnet50_i1k", "inception_v3_i1k")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = qat.base_config()
  c.fp_from = ""  # trained full-precision weights; empty: train them in <workdir>/fp
  c.fp_steps = 0  # steps of full-precision training (0: num_epochs x fp_epochs_factor)
  c.fp_lr = 0.1
  c.hawq = ml_collections.ConfigDict(dict(
      candidates=(2, 4, 8), budget_bits=3.0, hessian_batches=2, hessian_batch_size=128,
      max_iters=20, tol=1e-2, stages=2, rule="pareto"))
  c.quant.update(method="uniform", select=r".*kernel")
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", momentum=0.9, nesterov=False, decay=0.9, eps=1e-8, b1=0.9, b2=0.999,
      weight_decay=1e-4, wd_mask=r".*kernel", grad_clip=0.0))
  c.schedule = ml_collections.ConfigDict(dict(name="cosine", base_lr=0.01, warmup_epochs=0.0,
                                               end_lr_fraction=0.0))
  arg = arg or "resnet50_i1k"
  if arg not in SETTINGS:
    raise UserError(f"unknown setting '{arg}' ({', '.join(SETTINGS)})")
  if arg == "runlocal":
    c.name = "hawq_digits"
    c.model_name = "resnet20"
    c.model = ml_collections.ConfigDict(dict(widths=(8, 16, 32)))
    digits(c, size=16, batch_size=32, eval_batch_size=360)
    c.fp_steps = 200
    c.total_steps = 40
    c.hawq.update(candidates=(1, 2, 3, 4, 8), budget_bits=2.0, hessian_batches=1, hessian_batch_size=32,
                  max_iters=6)
    c.quant.stage_steps = 20
    c.log_every = 20
    c.checkpoint_every = 0
    return c
  if arg == "resnet20_cifar10":
    c.name = "hawq_resnet20_cifar10"
    c.model_name = "resnet20"
    c.input.update(data="tfds:cifar10", train_split="train", eval_split="test", batch_size=128,
                   eval_batch_size=1000, num_threads=16,
                   pp_train="decode|random_crop(32, pad=4)|flip_lr|value_range(-1, 1)",
                   pp_eval="decode|value_range(-1, 1)")
    c.num_epochs = 20.0
    c.fp_steps = 160 * 50_000 // 128
    c.hawq.update(candidates=(2, 4), budget_bits=32 / 13.11)
    c.quant.act_bits = 4
    c.quant.stage_steps = 5 * 50_000 // 128
  else:
    from experiments.common import imagenet
    c.name = f"hawq_{arg}"
    c.model_name = {"resnet50_i1k": "resnet50", "inception_v3_i1k": "inception_v3"}[arg]
    size, resize = (224, 256) if arg == "resnet50_i1k" else (299, 342)
    # The inputs the timm weights `fp_from` converts were trained on: ResNet-50 ImageNet mean/std,
    # Inception-v3 [-1, 1].
    imagenet(c, size=size, eval_resize=resize, batch_size=256, num_epochs=30.0,
             norm="normalize" if arg == "resnet50_i1k" else "value_range(-1, 1)")
    c.hawq.update(candidates=(2, 4, 8), budget_bits=32 / (12.28 if arg == "resnet50_i1k" else 12.04),
                  hessian_batch_size=256, hessian_batches=4)
    c.quant.act_bits = 4
    c.quant.stage_steps = 5 * 1_281_167 // 256
    c.fp_steps = 90 * 1_281_167 // 256  # the standard 90-epoch recipe when no fp_from is given
  c.hawq.stages = 2
  c.log_every = 100
  c.checkpoint_every = 5_000
  return c


def main(argv=None):
  return run_experiment(get_config, train, argv)


if __name__ == "__main__":
  main()
