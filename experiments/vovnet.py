"""VoVNet (Lee et al., CVPR Workshops 2019) and VoVNetV2 / eSE-VoVNet (CenterMask, CVPR 2020),
paper 5 of the zoo.

CPU, embedded digits (about 1 minute on 2 cores; held-out top-1 about 0.98):
  python -m experiments.vovnet --config=runlocal --workdir=workdirs/vovnet_digits
ImageNet-1k backbone pre-training with the authors' recipe, for one variant (39, 57 = VoVNet-39/57;
ese19_dw, ese39, ese57, ese99 = timm's eSE-VoVNetV2 networks; default 39; the authors report 76.8% /
77.7% top-1 for VoVNet-39 / 57; prepare `tfds build imagenet2012 --manual_dir=...` first):
  python -m experiments.vovnet --config=39 --workdir=WORKDIR --config.input.data_dir=TFDS_DIR

Full setting: the paper pre-trains its backbones on ImageNet with the PyTorch ImageNet example's
protocol (the authors' VoVNet.pytorch): SGD with momentum 0.9, weight decay 1e-4 on every parameter
(PyTorch's SGD decays biases and BN too), global batch 256, learning rate 0.1 divided by 10 every 30
epochs, 90 epochs, 224 px random-resized crops (8-100% of the area) with flips, evaluation on the
central 224 crop of the image resized to 256 on its short side; no label smoothing, no parameter
EMA. The eSE variants use the same recipe here (CenterMask does not give one; timm's released
eSE weights used a RandAugment recipe the trainer does not have yet).

CPU setting (`--config=runlocal`): scikit-learn's 8x8 digits upsampled to 32x32 (stride 32 leaves
one pixel), VoVNet-39's layout (1/1/2/2 OSA modules of five 3x3 layers) at 1/8 width, the paper's
SGD with momentum and step decay compressed to 300 steps of batch 64 (13 epochs; decay x0.1 at
steps 200 and 400 of the schedule, so once) after a short warm-up.
"""
import ml_collections

from experiments.common import digits, imagenet
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.train import classification

VARIANTS = {"39": "vovnet39a", "57": "vovnet57a", "ese19_dw": "ese_vovnet19b_dw",
            "ese39": "ese_vovnet39b", "ese57": "ese_vovnet57b", "ese99": "ese_vovnet99b"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = classification.base_config()
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", momentum=0.9, nesterov=False, decay=0.9, eps=1e-8, b1=0.9, b2=0.999,
      weight_decay=1e-4, wd_mask=r".*", grad_clip=0.0))
  c.schedule = ml_collections.ConfigDict(dict(
      name="exponential", base_lr=0.1, decay_rate=0.1, decay_epochs=30.0, warmup_epochs=0.0,
      end_lr_fraction=0.0))
  if arg == "runlocal":
    c.name = c.model_name = "vovnet39a"
    c.model = ml_collections.ConfigDict(dict(stem_chs=(8, 8, 16), stage_conv_chs=(16, 20, 24, 28),
                                             stage_out_chs=(32, 64, 96, 128)))
    digits(c, size=32)
    c.total_steps = 300
    c.schedule.update(warmup_epochs=1.0, decay_epochs=9.0)
    c.log_every = 25
    c.checkpoint_every = 100
    return c
  variant = arg or "39"
  if variant not in VARIANTS:
    raise UserError(f"unknown setting '{arg}' (runlocal, {', '.join(VARIANTS)})")
  c.name = c.model_name = VARIANTS[variant]
  imagenet(c, size=224, eval_resize=256, batch_size=256, num_epochs=90.0, crop="area_min=8")
  return c


def main(argv=None):
  return run_experiment(get_config, classification.run, argv)


if __name__ == "__main__":
  main()
