"""DenseShift (Li, Liu, Yang, Courville, Xing, Partovi Nia, "DenseShift: Towards Accurate and Efficient
Low-Bit Power-of-Two Quantization", ICCV 2023), paper 3 of the zoo: 3-bit zero-free shift weights
against the zero-including shift baseline, the same levels trained directly, and full precision,
transferred from a trained checkpoint (inception_zoo/projects/denseshift/, README.md there).

CPU setting (about 1.5 min): from a full-precision ResNet-20 (0.986), 3-bit zero-free shift weights reach
0.975 held-out top-1 (loss 0.076) vs the zero-including shift network's 0.967 (0.129):
  python -m experiments.denseshift --config=runlocal --workdir=workdirs/denseshift_digits
Full setting: ResNet-18 on ImageNet, 3 bits, from full-precision weights:
  python -m experiments.denseshift --config=resnet18_i1k --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
"""
import ml_collections

from experiments.common import digits
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.denseshift.run import train
from inception_zoo.train import qat


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = qat.base_config()
  c.fp_from = ""  # trained full-precision weights; empty: train them in <workdir>/fp
  c.fp_steps = 0
  c.fp_lr = 0.1
  # Every convolution but the stem; the stem and the classifier stay in full precision.
  c.quant.update(method="denseshift", bits=3, select=r".*kernel", exclude=r"conv1/kernel|fc/.*",
                 latent_std=1e-5)
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", momentum=0.9, nesterov=False, decay=0.9, eps=1e-8, b1=0.9, b2=0.999,
      weight_decay=1e-4, wd_mask=r".*kernel", grad_clip=0.0))
  c.schedule = ml_collections.ConfigDict(dict(name="cosine", base_lr=0.1, warmup_epochs=0.0,
                                               end_lr_fraction=0.0))
  arg = arg or "resnet18_i1k"
  if arg == "runlocal":
    c.name = "denseshift_digits"
    c.model_name = "resnet20"
    c.model = ml_collections.ConfigDict(dict(widths=(8, 16, 32)))
    digits(c, size=16, batch_size=32, eval_batch_size=360)
    c.fp_steps = 200
    c.total_steps = 100
    c.schedule.base_lr = 0.01
    c.log_every = 50
    c.checkpoint_every = 0
    return c
  if arg != "resnet18_i1k":
    raise UserError(f"unknown setting '{arg}' (runlocal, resnet18_i1k)")
  from experiments.common import imagenet
  c.name = "denseshift_resnet18_i1k"
  c.model_name = "resnet18"
  # ImageNet mean/std: the input timm's resnet18 weights (a usual `fp_from`) were trained on.
  imagenet(c, size=224, eval_resize=256, batch_size=256, num_epochs=90.0, norm="normalize")
  c.fp_steps = 90 * 1_281_167 // 256
  return c


def main(argv=None):
  return run_experiment(get_config, train, argv)


if __name__ == "__main__":
  main()
