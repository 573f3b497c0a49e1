"""Inception Transformer (Si, Yu, Zhou, Zhou, Wang, Yan, "Inception Transformer", NeurIPS 2022).

CPU, embedded digits (about 1.5 minutes on 2 cores; held-out top-1 about 0.99):
  python -m experiments.iformer --config=runlocal --workdir=workdirs/iformer_digits
ImageNet-1k at 224 px, the paper's recipe for one variant (small, base, large; default small; the
paper reports 83.4 / 84.6 / 84.8% top-1; prepare `tfds build imagenet2012 --manual_dir=...` first):
  python -m experiments.iformer --config=small --workdir=WORKDIR --config.input.data_dir=TFDS_DIR

Full setting (the paper's ImageNet-1K recipe and the official runs' checkpoint/iformer_*/args.yaml, timm 0.5.4's
train.py):
AdamW (betas 0.9 / 0.999, eps 1e-8), weight decay 0.05, global batch 1024, learning rate 1e-3 with 5
warm-up epochs and cosine decay over 300 epochs to 1e-6 (small) or 1e-5 (base, large), gradient
clipping at global norm 1.0 for base and large only, label smoothing 0.1, stochastic depth 0.2 / 0.4 /
0.5, no parameter EMA. Weight decay follows timm 0.5.4's rule as the official runs met it: vectors
(norms, biases, layer scales) do not decay, every kernel does, and so do the four position
embeddings (`no_weight_decay()` names 'pos_embed', which timm compares with whole parameter names,
and they are pos_embed1..4). Training images: 224 px bicubic random-resized crops (8-100% of the
area), flips, RandAugment rand-m9-mstd0.5-inc1 (which turns the color jitter off), random erasing 0.25
in 'pixel' mode, Mixup 0.8 / CutMix 1.0 (switch 0.5, one draw per batch). Evaluation resizes the
short side to 248 (crop 0.9, bicubic) and takes the central 224.
Differences left: base and large ran with repeated augmentation (3 repeats), which this input
pipeline does not do; timm's 10 cool-down epochs at the final rate, its warm-up from 1e-6 rather
than 0 and its random bilinear/bicubic training interpolation; inputs scaled to [-1, 1] rather than
standardised by the ImageNet mean and std.

CPU setting (`--config=runlocal`): scikit-learn's 8x8 digits upsampled to 32x32, three stages of 1, 1
and 2 blocks at widths 32/64/96 (16 channels per head) on 8x8, 4x4 and 2x2 maps, with the paper's
frequency ramp: 1 of 2 heads, 2 of 4, then 3 and 4 of 6 heads attend (stages 1-2 on 2x2-pooled
tokens), the rest of the channels go to the max-pool and depthwise-convolution branches; layer scale
in stage 3. AdamW at 2e-3 with a one-epoch warm-up and cosine decay, label smoothing 0.1, 150 steps
of batch 64 (7 epochs).
"""
import ml_collections

from experiments.common import digits, imagenet
from inception_zoo import sharding
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.train import classification

# Setting -> (stochastic depth, final learning rate, gradient clipping) of the official args.yaml.
VARIANTS = {"small": (0.2, 1e-6, 0.0), "base": (0.4, 1e-5, 1.0), "large": (0.5, 1e-5, 1.0)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = classification.base_config()
  c.label_smoothing = 0.1
  # Kernels and the position embeddings decay (see the docstring); vectors do not.
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, decay=0.9,
      weight_decay=0.05, wd_mask=r".*kernel|pos_embed\d", grad_clip=0.0))
  c.schedule = ml_collections.ConfigDict(dict(
      name="cosine", base_lr=1e-3, warmup_epochs=5.0, end_lr_fraction=1e-6 / 1e-3, decay_rate=0.94,
      decay_epochs=2.0))
  # Tensor parallelism over `model` (size 1 until set, e.g. --config.mesh.model=4): the mixer's
  # attn/qkv and attn/proj and the MLP's fc1/fc2 carry the transformer rules' names.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
  c.sharding_rules = sharding.TENSOR_PARALLEL_RULES
  if arg == "runlocal":
    c.name = "iformer_digits"
    c.model_name = "iformer_small"
    c.model = ml_collections.ConfigDict(dict(
        img_size=32, depths=(1, 1, 2), embed_dims=(32, 64, 96), num_heads=(2, 4, 6),
        attention_heads=(1, 2, 3, 4), pool_sizes=(2, 2, 1), layer_scales=(0.0, 0.0, 1e-6)))
    digits(c, size=32)
    c.total_steps = 150
    c.schedule.update(base_lr=2e-3, warmup_epochs=1.0, end_lr_fraction=0.0)
    c.log_every = 25
    c.checkpoint_every = 100
    return c
  variant = arg or "small"
  if variant not in VARIANTS:
    raise UserError(f"unknown setting '{arg}' (runlocal, {', '.join(VARIANTS)})")
  drop_path, end_lr, clip = VARIANTS[variant]
  c.name = c.model_name = f"iformer_{variant}"
  c.model = ml_collections.ConfigDict(dict(drop_path_rate=drop_path))
  c.optimizer.grad_clip = clip
  c.schedule.end_lr_fraction = end_lr / c.schedule.base_lr
  c.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5)
  imagenet(c, size=224, eval_resize=248, batch_size=1024, num_epochs=300.0, crop="area_min=8",
           augment="rand-m9-mstd0.5-inc1", erase=0.25, bicubic=True)
  return c


def main(argv=None):
  return run_experiment(get_config, classification.run, argv)


if __name__ == "__main__":
  main()
