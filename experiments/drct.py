"""DRCT (Hsu, Lee, Chou, "DRCT: Saving Image Super-resolution away from Information Bottleneck", CVPR 2024
Workshops), paper 24 of the zoo: a tiny DRCT trained for x2 super-resolution on CPU.
(inception_zoo/projects/drct/, README.md there: what is measured, and how).

CPU setting (about 2.5 min): a tiny DRCT, x2 on the sample photos, 1,250 steps on the paper's halving
schedule: held-out PSNR-Y 24.36 dB vs bicubic 24.18, SSIM-Y 0.774 vs 0.736:
  python -m experiments.drct --config=runlocal --workdir=workdirs/drct
Full setting: DF2K x4, DRCT / DRCT-L, 500k / 800k iterations; Set5 / Set14 / BSD100 / Urban100 / Manga109.
"""
import ml_collections

from inception_zoo import sharding
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.drct.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  steps = 1250
  c = ml_collections.ConfigDict(dict(
      name="drct_tiny_x2_sample_images", data="sample_images", eval_dirs=(), model="drct_tiny", scale=2,
      patch_size=16, batch_size=4, total_steps=steps, seed=0, ema_decay=0.0,
      log_every=100, eval_every=250, checkpoint_every=500, keep_checkpoints=3,
      optimizer=dict(name="adamw", b1=0.9, b2=0.99, weight_decay=0.0),
      # The paper's halvings at 50 / 80 / 90 / 95% of training, in steps: a schedule that does not depend
      # on total_steps, so a shorter run (the resume test) compiles the same step.
      schedule=dict(name="multistep", base_lr=4e-3, decay_rate=0.5, warmup_epochs=20,
                    milestones=tuple(int(f * steps) for f in (0.5, 0.8, 0.9, 0.95))),
      mesh=dict(data=1), sharding_rules=sharding.DEFAULT_RULES, fsdp_min_size=2 ** 14))
  if arg == "runlocal":
    return c
  if arg not in (None, "drct_l"):
    raise UserError(f"unknown setting '{arg}' (runlocal, drct_l, or none = DRCT x4 on DF2K)")
  c.update(name="drct_x4_df2k", data="dir:datasets/DF2K/DF2K_train_HR", model="drct", scale=4,
           patch_size=64, batch_size=32, total_steps=500_000, ema_decay=0.999, eval_every=5000,
           checkpoint_every=5000,
           eval_dirs=tuple(f"datasets/{d}/HR" for d in ("Set5", "Set14", "BSD100", "Urban100", "Manga109")))
  c.schedule.update(base_lr=2e-4, warmup_epochs=0, milestones=(250_000, 400_000, 450_000, 475_000))
  c.mesh.data = -1
  if arg == "drct_l":
    c.update(name="drct_l_x4_df2k", model="drct_l", total_steps=800_000)
    c.schedule.milestones = (300_000, 500_000, 650_000, 700_000, 750_000)
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
