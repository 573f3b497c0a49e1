"""drct's experiment driver (README.md; the recipes are experiments/drct.py)."""
import os
from typing import Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.metrics import read_metrics
from inception_zoo.projects.drct import sr
from inception_zoo.projects.drct.drct import create_drct
from inception_zoo.train.classification import eval_params
from inception_zoo.utils import plots


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
