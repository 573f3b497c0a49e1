"""Swin Transformer V2 (Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution",
CVPR 2022).

CPU, embedded digits (about 1.5 minutes on 2 cores; held-out top-1 about 0.97):
  python -m experiments.swinv2 --config=runlocal --workdir=workdirs/swinv2_digits
ImageNet-1k at 256 px, the paper's recipe for one variant (tiny, small, base with 8x8 windows;
tiny16, small16, base16 with 16x16 windows; default tiny; the official repository reports 81.8 / 83.7
/ 84.2% top-1 with 8x8 windows and 82.8 / 84.1 / 84.6% with 16x16; prepare `tfds build imagenet2012
--manual_dir=...` first):
  python -m experiments.swinv2 --config=tiny --workdir=WORKDIR --config.input.data_dir=TFDS_DIR

Full setting (the paper's Appendix A1.1 and the official repository's configs, which follow Swin V1
and DeiT): AdamW (betas 0.9 / 0.999, eps 1e-8) with weight decay 0.05 under timm's rule
(`wd_mask='no_norm_bias'`: kernels decay; norms, biases, the position-bias MLP and the logit scales
do not), global batch 1024, learning rate 1e-3 with 20 warm-up epochs and cosine decay to 1e-5 over
300 epochs, gradient clipping at global norm 5.0, label smoothing 0.1, stochastic depth 0.2 / 0.3 /
0.5 for tiny / small / base, no parameter EMA. Training images: 256 px bicubic random-resized crops
(8-100% of the area), flips, RandAugment rand-m9-mstd0.5-inc1 (which turns the color jitter off),
random erasing 0.25 in 'pixel' mode, Mixup 0.8 / CutMix 1.0 (switch 0.5, one draw per batch).
Evaluation resizes the short side to 292 (256 x 256 / 224, bicubic) and takes the central 256.
Differences left: the warm-up starts at 0 rather than 1e-6, and inputs are scaled to [-1, 1] rather
than standardised by the ImageNet mean and std.

CPU setting (`--config=runlocal`): scikit-learn's 8x8 digits upsampled to 32x32 and cut into 4x4
patches (one token per original pixel), two stages of two blocks at widths 48/96 (16 channels per
head) with 4x4 windows: stage 1's 8x8 tokens alternate plain and shifted windows with the mask, stage
2's 4x4 map is one window. AdamW at 2e-3 with a one-epoch warm-up and cosine decay, label smoothing
0.1, gradient clipping at 5, 200 steps of batch 64 (9 epochs).
"""
import ml_collections

from experiments.common import imagenet, swinv2_digits
from inception_zoo import sharding
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.train import classification

# Setting -> (model, stochastic depth).
VARIANTS = {"tiny": ("swinv2_tiny_window8_256", 0.2), "small": ("swinv2_small_window8_256", 0.3),
            "base": ("swinv2_base_window8_256", 0.5), "tiny16": ("swinv2_tiny_window16_256", 0.2),
            "small16": ("swinv2_small_window16_256", 0.3), "base16": ("swinv2_base_window16_256", 0.5)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = classification.base_config()
  c.label_smoothing = 0.1
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, decay=0.9,
      weight_decay=0.05, wd_mask="no_norm_bias", grad_clip=5.0))
  c.schedule = ml_collections.ConfigDict(dict(
      name="cosine", base_lr=1e-3, warmup_epochs=20.0, end_lr_fraction=1e-5 / 1e-3, decay_rate=0.94,
      decay_epochs=2.0))
  # Tensor parallelism over `model` (size 1 until set, e.g. --config.mesh.model=4).
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
  c.sharding_rules = sharding.TENSOR_PARALLEL_RULES
  if arg == "runlocal":
    c.name = "swinv2_digits"
    swinv2_digits(c)
    c.total_steps = 200
    c.schedule.update(base_lr=2e-3, warmup_epochs=1.0, end_lr_fraction=0.0)
    c.log_every = 25
    c.checkpoint_every = 100
    return c
  variant = arg or "tiny"
  if variant not in VARIANTS:
    raise UserError(f"unknown setting '{arg}' (runlocal, {', '.join(VARIANTS)})")
  c.model_name, drop_path = VARIANTS[variant]
  c.name = c.model_name
  c.model = ml_collections.ConfigDict(dict(drop_path_rate=drop_path))
  c.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5)
  imagenet(c, size=256, eval_resize=292, batch_size=1024, num_epochs=300.0, crop="area_min=8",
           augment="rand-m9-mstd0.5-inc1", erase=0.25, bicubic=True)
  return c


def main(argv=None):
  return run_experiment(get_config, classification.run, argv)


if __name__ == "__main__":
  main()
