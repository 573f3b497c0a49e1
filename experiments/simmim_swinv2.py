"""SimMIM pre-training of Swin Transformer V2 (Xie et al., "SimMIM: A Simple Framework for Masked Image
Modeling", CVPR 2022; the pre-training of Liu et al., "Swin Transformer V2", CVPR 2022), and fine-tuning
a classifier from it.

CPU, embedded digits (about 1 minute on 2 cores; the held-out masked L1 falls from about 1.0 to about
0.3), then a digits classifier from the pre-trained encoder:
  python -m experiments.simmim_swinv2 --config=runlocal --workdir=workdirs/simmim_swinv2_digits
  python -m experiments.simmim_swinv2 --config=finetune_runlocal \
      --config.init_from=workdirs/simmim_swinv2_digits --workdir=workdirs/simmim_swinv2_finetune
ImageNet-1K at 192 px, SwinV2-B with 12x12 windows (prepare `tfds build imagenet2012 --manual_dir=...`):
  python -m experiments.simmim_swinv2 --config=swinv2_base --workdir=WORKDIR --config.input.data_dir=TFDS_DIR

Full setting (SimMIM Sec. 4.1 and the official `simmim_pretrain__swinv2_base__img192_window12__800ep`
recipe): 192 px random-resized crops of 67-100% of the area, aspect 3/4-4/3, flips; 32 px mask patches,
mask ratio 0.6; AdamW (0.9, 0.999, eps 1e-8), weight decay 0.05 under timm's rule (`no_norm_bias`, as the
official optimizer), learning rate 1e-4 per
512 images (4e-4 at the global batch of 2048), 10 warm-up epochs, x0.1 at epoch 700 of 800, gradient
clipping at 5.0, stochastic depth 0.1. Differences left: the warm-up starts at 0 rather than 5e-7 x
batch / 512, and pixels are scaled to [-1, 1] rather than standardised by the ImageNet mean and std
(the L1 is over those pixels, so its scale differs). The held-out loss is on the validation set's
central 192 px crops (short side 219) under fixed masks. Fine-tuning at 256 px with 16x16 windows
is `experiments/swinv2.py` with `--config.init_from=<this workdir>` and its model's
`pretrained_window_sizes`.

CPU setting (`--config=runlocal`): the Swin V2 of `experiments/swinv2.py --config=runlocal` (32 px
digits, 4x4 patches, widths 48/96, 4x4 windows), two stages, so the encoder's stride is 8 rather than
32: the prediction head maps each of the 4x4 output tokens to 8x8x3 pixels, and the mask patches are
8 px (a quarter of the image side, where 32 px is a sixth of 192), 10 of the 16 masked (ceil(0.6 x
16)). AdamW at 2e-3, one warm-up epoch, cosine decay, 150 steps of batch 64. `finetune_runlocal` is
`experiments/swinv2.py`'s runlocal setting (same encoder, 200 steps) to be started with
`--config.init_from=` the pre-training workdir: the encoder loads, the classifier starts fresh.
"""
import ml_collections

from experiments import swinv2
from experiments.common import imagenet
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.train import classification, simmim


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg == "finetune_runlocal":
    c = swinv2.get_config("runlocal")
    c.name = "simmim_swinv2_finetune"
    return c
  c = simmim.base_config()
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, decay=0.9,
      weight_decay=0.05, wd_mask="no_norm_bias", grad_clip=5.0))
  if arg == "runlocal":
    c.name = "simmim_swinv2_digits"
    local = swinv2.get_config("runlocal")
    c.model_name, c.model = local.model_name, local.model
    c.input = local.input
    c.simmim.mask_patch_size = 8
    c.schedule = ml_collections.ConfigDict(dict(name="cosine", base_lr=2e-3, warmup_epochs=1.0,
                                                 end_lr_fraction=0.0))
    c.total_steps = 150
    c.log_every = 25
    c.checkpoint_every = 150
    return c
  if arg not in (None, "swinv2_base"):
    raise UserError(f"unknown setting '{arg}' (runlocal, finetune_runlocal, swinv2_base)")
  c.name = "simmim_swinv2_base_192"
  c.model_name = "swinv2_base_window8_256"
  c.model = ml_collections.ConfigDict(dict(img_size=192, window_size=12, drop_path_rate=0.1))
  imagenet(c, size=192, eval_resize=219, batch_size=2048, num_epochs=800.0,
           crop="area_min=67, area_max=100")
  c.schedule = ml_collections.ConfigDict(dict(name="multistep", base_lr=1e-4 * 2048 / 512,
                                               warmup_epochs=10.0, milestones=(700.0,), decay_rate=0.1))
  return c


def train(config: ml_collections.ConfigDict, workdir: str):
  """Pre-training configs have `simmim` fields; the fine-tuning one is a classification config."""
  return (simmim.run if "simmim" in config else classification.run)(config, workdir)


def main(argv=None):
  return run_experiment(get_config, train, argv)


if __name__ == "__main__":
  main()
