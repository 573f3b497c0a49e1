"""InceptionNeXt (Yu, Zhou, Yan, Wang, CVPR 2024), paper 4 of the zoo.

CPU, embedded digits (about 1 minute on 2 cores; held-out top-1 about 0.98):
  python -m experiments.inception_next --config=runlocal --workdir=workdirs/inception_next_digits
ImageNet-1k, the paper's recipe for one variant (atto, tiny, small, base; default tiny; the paper
reports 75.3 / 82.3 / 83.5 / 84.0% top-1 at 224 px; prepare `tfds build imagenet2012
--manual_dir=...` first):
  python -m experiments.inception_next --config=tiny --workdir=WORKDIR --config.input.data_dir=TFDS_DIR

Full setting (the official training scripts and their train.py defaults, which follow DeiT/ConvNeXt):
AdamW with weight decay 0.05 under timm's rule (`wd_mask='no_norm_bias'`: kernels decay; norms, biases
and layer scales do not), global batch 4096, learning rate 4e-3 with 20 warm-up epochs and cosine decay
to 1e-5 over 300 epochs, label smoothing 0.1, stochastic depth 0.1 / 0.3 / 0.4 for tiny / small /
base, no parameter EMA (the scripts leave timm's --model-ema off). Training images: 224 px
random-resized crops (8-100% of the area), flips, RandAugment rand-m9-mstd0.5-inc1 (which turns timm's
color jitter off), random erasing 0.25 in 'pixel' mode, and Mixup 0.8 / CutMix 1.0 (switch 0.5, one
draw per batch) with the label smoothing folded into the mixed targets. Evaluation resizes the short
side to 256 (base: 236, crop 0.95) and takes the central 224. atto has its own script: batch 1280,
learning rate 1e-3, 5 warm-up epochs, 600 epochs, stochastic depth 0.1, RandAugment rand-m5-inc1-mstd101
(magnitude uniform in [0, 5]), Mixup 0.2 (CutMix stays 1.0), random erasing 0.1.
Differences left: timm's 10 cool-down epochs at the final learning rate, its warm-up from 1e-6 rather
than 0, and inputs scaled to [-1, 1] rather than standardised by the ImageNet mean and std (so random
erasing's unit-normal noise is about twice the spread of the pixels it replaces, not equal to it).

CPU setting (`--config=runlocal`): scikit-learn's 8x8 digits upsampled to 32x32 (the smallest input
the 4x4 stem and three 2x2 downsamplings take), atto's layout (band kernel 9, a quarter of the
channels per convolved branch) at widths 32/64/96/128 with one block per stage, AdamW at 2e-3 with
warm-up and cosine decay, 300 steps of batch 64 (13 epochs).
"""
import ml_collections

from experiments.common import digits, imagenet
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.train import classification

DROP_PATH = {"atto": 0.1, "tiny": 0.1, "small": 0.3, "base": 0.4}
# The scripts' regularisation, tiny/small/base and atto: RandAugment spec, random erasing, Mixup alpha.
RECIPE = {"default": ("rand-m9-mstd0.5-inc1", 0.25, 0.8), "atto": ("rand-m5-inc1-mstd101", 0.1, 0.2)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = classification.base_config()
  c.label_smoothing = 0.1
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, decay=0.9,
      weight_decay=0.05, wd_mask="no_norm_bias", grad_clip=0.0))
  c.schedule = ml_collections.ConfigDict(dict(
      name="cosine", base_lr=4e-3, warmup_epochs=20.0, end_lr_fraction=1e-5 / 4e-3, decay_rate=0.94,
      decay_epochs=2.0))
  if arg == "runlocal":
    c.name = c.model_name = "inception_next_atto"
    c.model = ml_collections.ConfigDict(dict(dims=(32, 64, 96, 128), depths=(1, 1, 1, 1)))
    digits(c, size=32)
    c.total_steps = 300
    c.schedule.update(base_lr=2e-3, warmup_epochs=1.0, end_lr_fraction=0.0)
    c.log_every = 25
    c.checkpoint_every = 100
    return c
  variant = arg or "tiny"
  if variant not in DROP_PATH:
    raise UserError(f"unknown setting '{arg}' (runlocal, {', '.join(DROP_PATH)})")
  c.name = c.model_name = f"inception_next_{variant}"
  c.model = ml_collections.ConfigDict(dict(drop_path_rate=DROP_PATH[variant]))
  rand_augment, erase, mixup_alpha = RECIPE.get(variant, RECIPE["default"])
  c.mixup.update(mixup_alpha=mixup_alpha, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5)
  eval_resize = 236 if variant == "base" else 256
  imagenet(c, size=224, eval_resize=eval_resize, batch_size=4096, num_epochs=300.0, crop="area_min=8",
           augment=rand_augment, erase=erase)
  if variant == "atto":
    c.input.batch_size = 1280
    c.num_epochs = 600.0
    c.schedule.update(base_lr=1e-3, warmup_epochs=5.0, end_lr_fraction=5e-7 / 1e-3)
  return c


def main(argv=None):
  return run_experiment(get_config, classification.run, argv)


if __name__ == "__main__":
  main()
