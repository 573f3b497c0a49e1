"""DRCT (Hsu, Lee, Chou, "DRCT: Saving Image Super-resolution away from Information Bottleneck", CVPR 2024
Workshops), paper 24 of the zoo: a tiny DRCT trained for x2 super-resolution on CPU.

Claim reproduced (at toy scale): DRCT trained with the L1 loss on bicubic-downscaled patches
super-resolves held-out images better than bicubic interpolation, in PSNR and SSIM on the Y channel
(BasicSR's metrics, border crop = scale). The paper's own claim (DRCT beats SwinIR / HAT at fewer
parameters on Set5 ... Manga109) needs the full setting below. Plot: HR / bicubic / DRCT crops of a
held-out image and the held-out PSNR-Y against steps beside bicubic's, in WORKDIR/drct_sr.png.
  python -m experiments.drct --config=runlocal --workdir=workdirs/drct
CPU time here: 100 s of CPU (2.3 min wall on 2 heavily shared cores; about 25 s of it compiling the
train step), 1,250 steps. Measured on the two held-out crops (x2, border crop 2), in the tests (8 host
devices): PSNR-Y 24.36 dB vs bicubic 24.18 (+0.18 dB), SSIM-Y 0.774 vs 0.736; on the way 20.86 / 21.91 /
22.99 / 23.93 dB at steps 250 / 500 / 750 / 1,000 (below bicubic until about step 1,100: the network
starts from nothing, with no bicubic skip). Run alone (one device): 24.35 dB, SSIM-Y 0.770. Floats
differ with the number of host devices, and so do the trajectories: the same schedule over 1,000 steps
gained +0.15 dB in the tests but +0.10 alone, too close to the tested 0.1. At 1,500 steps of 2e-3 with
cosine decay (this setting before) it reached 24.40 dB and SSIM-Y 0.777 for 102 s of CPU.

Training is the library's SR trainer (`inception_zoo.train.sr.train`, on the shared step loop): the
workdir's newest checkpoint is resumed first (`checkpoint_every` steps, at the end and on SIGTERM), the
patches of step i depend only on (seed, i), so a resumed run is exactly an uninterrupted one; a
non-finite loss stops the run with the last checkpoint intact; PSNR / SSIM of every evaluation set
beside bicubic's go to metrics.jsonl every `eval_every` steps.

CPU setting (`runlocal`): scikit-learn's two sample photographs (china.jpg, flower.jpg, 427x640, shipped
with scikit-learn); training on random patches of china's left 416 columns and of flower, with the 8
flips/transposes. Held out: two 128x128 crops of china's textured lower right (rows 120 and 280,
columns 480-607, 64 px from the training columns; flower's right side is flat background where
bicubic is already at 54 dB). `drct_tiny` (24 channels, one residual dense group of five Swin layers
with 3 / 1 / 2 / 3 / 1 heads, 8x8 windows, growth 8, a 16-channel x2 pixel-shuffle upsampler), Adam
(b2 0.99, as the official options) at 4e-3 with 20 warm-up steps, halved at 50 / 80 / 90 / 95% of the
1,250 steps (the paper's schedule, shrunk), batch 4 of 16x16 LR patches (32x32 HR). Our choices for CPU:
the larger learning rate (the paper's 2e-4 would barely move in 1,250 steps), the narrow upsampler (64
channels in the paper) and no EMA. Over 600 steps (a sweep with other patches) 4e-3 halving reached
24.09 dB, 2e-3 24.05, cosine 23.94, 8e-3 with clipping 23.27: fewer steps do not beat bicubic.

Full setting (`get_config()`; `--config=drct_l` for DRCT-L): x4, LR patches 64 (HR 256), batch 32
(4 per GPU on 8 GPUs), Adam 2e-4 (b1 0.9, b2 0.99, no weight decay), 500k iterations halving the rate
at 250k / 400k / 450k / 475k, EMA 0.999 (official options/train/train_DRCT_SRx4_from_scratch.yml;
DRCT-L: 800k iterations, steps at 300k / 500k / 650k / 700k / 750k, pre-trained on ImageNet in the
paper); training data DF2K (DIV2K + Flickr2K HR images, `data=dir:PATH`), evaluation on Set5, Set14,
BSD100, Urban100 and Manga109 HR directories (`eval_dirs`), their LR by bicubic downscale, PSNR / SSIM
on Y with a 4-pixel border crop every 5,000 iterations, checkpoints as often (the official `val_freq` and
`save_checkpoint_freq`). The loaders are directory readers (`inception_zoo.train.sr.load_image_dir`,
which holds the decoded images in memory as uint8: DF2K's 3,450 images need about 30 GB); the full
setting runs through the same trainer when the directories exist.
"""
import os
from typing import Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception_zoo import sharding
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.metrics import read_metrics
from inception_zoo.models.drct import create_drct
from inception_zoo.train import sr
from inception_zoo.train.classification import eval_params
from inception_zoo.utils import plots


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


def load_data(config) -> tuple:
  """(train images, {eval set: [HR images]}): float32 in [0, 1] or uint8 (`sr.to_unit`)."""
  if config.data == "sample_images":
    from sklearn.datasets import load_sample_images
    china, flower = (np.asarray(p, np.float32) / 255.0 for p in load_sample_images().images)
    # Held out: two 128x128 crops of china's textured lower right (flower's right side is flat
    # background, where bicubic is already at 54 dB); training: china's left 416 columns and flower.
    return [china[:, :416], flower], {"sample_images": [china[y:y + 128, 480:608] for y in (120, 280)]}
  if not config.data.startswith("dir:"):
    raise UserError(f"unknown data '{config.data}' (sample_images, dir:PATH)")
  train = list(sr.load_image_dir(config.data[len("dir:"):], config.scale).values())
  # datasets/Set5/HR -> 'Set5'
  evals = {os.path.basename(os.path.dirname(d.rstrip("/"))) or d:
           list(sr.load_image_dir(d, config.scale).values()) for d in config.eval_dirs}
  return train, evals


def plot(workdir: str, curve: List[Dict[str, float]], hr, bicubic, ours, scale: int):
  plt = plots.pyplot()
  fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
  for ax, image, title in zip(axes, (hr, bicubic, ours), ("HR", "bicubic", "DRCT")):
    ax.imshow(np.clip(image, 0, 1))
    ax.set_title(f"{title} ({sr.psnr_y(sr.quantize(image), hr, scale):.2f} dB)" if title != "HR" else title)
    ax.axis("off")
  steps = [r["step"] for r in curve]
  axes[3].plot(steps, [r["psnr_y"] for r in curve], "o-", label="DRCT")
  axes[3].plot(steps, [r["bicubic_psnr_y"] for r in curve], "--", label="bicubic")
  axes[3].set(xlabel="step", ylabel="held-out PSNR-Y (dB)", title=f"x{scale} super-resolution")
  axes[3].legend()
  plots.save(fig, os.path.join(workdir, "drct_sr.png"))


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  train_images, eval_sets = load_data(config)
  model = create_drct(config.model, upscale=config.scale)
  state, result = sr.train(config, workdir, model, train_images, eval_sets)
  first = next(iter(eval_sets))
  # One row per evaluated step (a resumed run may have logged a step twice: the later row counts).
  curve = {r["step"]: r for r in read_metrics(workdir) if f"{first}/psnr_y" in r}
  hr = jnp.asarray(sr.to_unit(sr.mod_crop(eval_sets[first][0], config.scale)))[None]
  lr, bicubic = sr.bicubic_pair(hr, config.scale)
  ours = jax.jit(lambda params, lr: model.apply({"params": params}, lr)[0])(eval_params(state, config), lr)
  plot(workdir, [{"step": step, "psnr_y": r[f"{first}/psnr_y"],
                  "bicubic_psnr_y": r[f"{first}/bicubic_psnr_y"]} for step, r in sorted(curve.items())],
       np.asarray(hr[0]), np.asarray(bicubic[0]), np.asarray(ours[0]), config.scale)
  for name in eval_sets:
    result[f"{name}/psnr_gain"] = result[f"{name}/psnr_y"] - result[f"{name}/bicubic_psnr_y"]
  if jax.process_index() == 0:
    print(" ".join(f"{k}={v:.4f}" for k, v in result.items()))
  return result


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
