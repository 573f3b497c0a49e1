"""SimMIM pre-training of Swin Transformer V2 (Xie et al., "SimMIM: A Simple Framework for Masked Image
Modeling", CVPR 2022; the pre-training of Liu et al., "Swin Transformer V2", CVPR 2022), and fine-tuning
a classifier from it (inception_zoo/projects/simmim/, README.md there: what is measured, and how).

CPU setting (about 1.5 + 2 min): held-out masked L1 0.695 -> 0.308 on digits (32 px, 8 px mask patches,
ratio 0.6); fine-tuned 0.94 held-out top-1 (below the 0.97 from scratch: no gain at this scale):

  python -m experiments.simmim_swinv2 --config=runlocal --workdir=workdirs/simmim_swinv2_digits
  python -m experiments.swinv2 --config=runlocal --config.init_from=workdirs/simmim_swinv2_digits \
      --workdir=workdirs/simmim_swinv2_finetune
Full setting: ImageNet-1k 192 px, SwinV2-B window 12, 800 epochs:
  python -m experiments.simmim_swinv2 --config=swinv2_base --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
"""
import ml_collections

from experiments.common import imagenet, swinv2_digits
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.simmim import task as simmim
from inception_zoo.projects.simmim.run import train


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = simmim.base_config()
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, decay=0.9,
      weight_decay=0.05, wd_mask="no_norm_bias", grad_clip=5.0))
  if arg == "runlocal":
    c.name = "simmim_swinv2_digits"
    swinv2_digits(c)
    c.simmim.mask_patch_size = 8
    c.schedule = ml_collections.ConfigDict(dict(name="cosine", base_lr=2e-3, warmup_epochs=1.0,
                                                 end_lr_fraction=0.0))
    c.total_steps = 150
    c.log_every = 25
    c.checkpoint_every = 150
    return c
  if arg not in (None, "swinv2_base"):
    raise UserError(f"unknown setting '{arg}' (runlocal, swinv2_base; fine-tune with experiments.swinv2)")
  c.name = "simmim_swinv2_base_192"
  c.model_name = "swinv2_base_window8_256"
  c.model = ml_collections.ConfigDict(dict(img_size=192, window_size=12, drop_path_rate=0.1))
  imagenet(c, size=192, eval_resize=219, batch_size=2048, num_epochs=800.0,
           crop="area_min=67, area_max=100")
  c.schedule = ml_collections.ConfigDict(dict(name="multistep", base_lr=1e-4 * 2048 / 512,
                                               warmup_epochs=10.0, milestones=(700.0,), decay_rate=0.1))
  return c


def main(argv=None):
  return run_experiment(get_config, train, argv)


if __name__ == "__main__":
  main()
