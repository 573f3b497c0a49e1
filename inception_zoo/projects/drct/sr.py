"""Single-image super-resolution: data, the L1 train step, and PSNR / SSIM on the Y channel.

The recipe of the SwinIR / HAT / DRCT line of work (BasicSR, which DRCT's official code builds on):
low-resolution inputs are bicubic downscales of high-resolution (HR) patches, augmented by horizontal
flips, vertical flips and transposes (BasicSR's `augment(hflip, rot)`: the 8 symmetries of the square);
the loss is the mean L1 distance to the HR patch; images are scored by PSNR and SSIM on the luma (Y of
ITU-R BT.601 YCbCr) of 8-bit images with `crop_border` pixels removed at every side, as BasicSR's
`calculate_psnr` / `calculate_ssim` with `test_y_channel=True` (SSIM: 11x11 Gaussian window of sigma 1.5,
'valid' filtering, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2; Wang et al., IEEE TIP 2004).

Our reading: the bicubic kernel is `jax.image.resize`'s Keys cubic (a = -0.5) with antialiasing when
downscaling, MATLAB's `imresize` kernel, which BasicSR reproduces; borders differ (MATLAB mirrors the
image, JAX renormalises the kernel), so LR images match MATLAB's in the interior only.

Images are float arrays in [0, 1], NHWC. `train` is the trainer: a `TrainState` (the classifier's
sharded init and resume, `restore_or_init`), the L1 step (the optimizer from the config,
`apply_gradients` with its EMA and NaN guard) driven by the shared harness (`loop.Run`:
checkpoints, pre-emption, NaN stop, metrics), and PSNR / SSIM of every evaluation set against bicubic
written as metrics. The patches of step i are drawn from `np.random.default_rng([seed, i, process])`,
so a resumed run sees exactly the batches an uninterrupted one would.
"""
import functools
import itertools
import os
from typing import Any, Callable, Dict, Iterator, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo import sharding
from inception_zoo.data.datasets import IMAGE_SUFFIXES
from inception_zoo.errors import UserError
from inception_zoo.train import loop, optim
from inception_zoo.train.classification import eval_params, update_state
from inception_zoo.train.state import TrainState, global_batch, restore_or_init, step_rng

# ITU-R BT.601 luma of RGB in [0, 1], in [16, 235] (BasicSR's `rgb2ycbcr(y_only=True)` x 255).
Y_WEIGHTS = (65.481, 128.553, 24.966)
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def rgb_to_y(x):
  """(..., 3) RGB in [0, 1] -> (...) luma in [16, 235]."""
  return 16.0 + x @ jnp.asarray(Y_WEIGHTS, x.dtype)


def quantize(x):
  """To 8-bit levels, as BasicSR's `tensor2img` before scoring (clip, x 255, round), back in [0, 1]."""
  return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0) / 255.0


def _crop(y, border: int):
  return y[..., border:y.shape[-2] - border, border:y.shape[-1] - border] if border else y


def psnr_y(sr, hr, crop_border: int):
  """PSNR (dB, peak 255) on the Y channel of (..., H, W, 3) images in [0, 1], per image."""
  d = _crop(rgb_to_y(sr) - rgb_to_y(hr), crop_border)
  mse = jnp.mean(d * d, axis=(-2, -1))
  return 10.0 * jnp.log10(255.0 ** 2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """OpenCV's `getGaussianKernel(size, sigma)` outer product with itself (sums to 1)."""
  g = np.exp(-(np.arange(size) - (size - 1) / 2) ** 2 / (2 * sigma ** 2))
  g /= g.sum()
  return np.outer(g, g)


def ssim_y(sr, hr, crop_border: int):
  """SSIM on the Y channel of (..., H, W, 3) images in [0, 1] (luma in [16, 235]), per image."""
  a, b = _crop(rgb_to_y(sr), crop_border), _crop(rgb_to_y(hr), crop_border)
  lead, (h, w) = a.shape[:-2], a.shape[-2:]
  a, b = a.reshape(-1, h, w, 1), b.reshape(-1, h, w, 1)
  window = jnp.asarray(gaussian_window(), a.dtype)[:, :, None, None]

  def filt(x):  # 'valid' Gaussian filtering (BasicSR filters with reflection, then drops 5 px)
    return jax.lax.conv_general_dilated(x, window, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))[..., 0]

  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  mu_a, mu_b = filt(a), filt(b)
  var_a, var_b = filt(a * a) - mu_a ** 2, filt(b * b) - mu_b ** 2
  cov = filt(a * b) - mu_a * mu_b
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
  return jnp.mean(ssim_map, axis=(-2, -1)).reshape(lead)


def bicubic_resize(x, size):
  """(B, H, W, C) -> (B, *size, C) by bicubic interpolation (antialiased when shrinking)."""
  return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "bicubic", antialias=True)


def downscale(hr, scale: int):
  """The LR input of an HR batch whose sides are multiples of `scale`."""
  h, w = hr.shape[1:3]
  if h % scale or w % scale:
    raise UserError(f"HR images of {h}x{w} are not multiples of the scale {scale} (mod-crop them)")
  return bicubic_resize(hr, (h // scale, w // scale))


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
  """Crops the bottom/right so both sides are multiples of `scale` (BasicSR's GTmod<scale>)."""
  h, w = image.shape[:2]
  return image[:h - h % scale, :w - w % scale]


def to_unit(image: np.ndarray) -> np.ndarray:
  """uint8 pixels -> float32 in [0, 1]; float images pass through."""
  return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image


def load_image_dir(path: str, scale: int) -> Dict[str, np.ndarray]:
  """HR images of a benchmark directory (Set5, Set14, BSD100, Urban100, Manga109, DF2K_HR...):
  {file name: uint8 (H, W, 3), mod-cropped to `scale`}, in sorted name order. They stay uint8 (a
  quarter of float32's memory: DF2K in ~30 GB); patches and evaluation convert with `to_unit`."""
  from PIL import Image
  if not os.path.isdir(path):
    raise UserError(f"image directory {path} does not exist")
  names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
  if not names:
    raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
  out = {}
  for name in names:
    with Image.open(os.path.join(path, name)) as im:
      out[name] = mod_crop(np.asarray(im.convert("RGB")), scale)
  return out


def sample_patches(rng: np.random.Generator, images: Sequence[np.ndarray], hr_size: int,
                   batch_size: int) -> np.ndarray:
  """`batch_size` random `hr_size` crops of random images (each at least that large), each under one
  of the 8 symmetries of the square (flip H, flip W, transpose: BasicSR's hflip + rot), on the host,
  float32 in [0, 1] (`to_unit`)."""
  out = np.empty((batch_size, hr_size, hr_size, images[0].shape[-1]), np.float32)
  for b in range(batch_size):
    image = images[rng.integers(len(images))]
    y, x = (rng.integers(s - hr_size + 1) for s in image.shape[:2])
    patch = image[y:y + hr_size, x:x + hr_size]
    flip_h, flip_w, transpose = rng.integers(2, size=3)
    patch = patch[::-1] if flip_h else patch
    patch = patch[:, ::-1] if flip_w else patch
    out[b] = to_unit(np.swapaxes(patch, 0, 1) if transpose else patch)
  return out


def make_train_step(model, tx: optax.GradientTransformation, schedule, config: ml_collections.ConfigDict):
  """(state, {'hr': (B, H, W, 3)}) -> (state, metrics): one L1 step on the bicubic downscales of the
  HR patches (`config.scale`)."""

  def train_step(state: TrainState, batch):
    hr = batch["hr"]
    lr = downscale(hr, config.scale)

    def loss_fn(params):
      sr, _ = model.apply({"params": params}, lr, train=True, rngs={"dropout": step_rng(state)})
      return jnp.mean(jnp.abs(sr - hr))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    new, grad_norm = update_state(state, grads, loss, state.batch_stats, tx, config)
    return new, {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step)}

  return train_step


@functools.partial(jax.jit, static_argnums=2)
def score(sr, hr, crop_border: int) -> Dict[str, Any]:
  """Mean PSNR-Y and SSIM-Y of 8-bit-quantised `sr` against `hr` (batches of equal-size images)."""
  sr = quantize(sr)
  return {"psnr_y": jnp.mean(psnr_y(sr, hr, crop_border)), "ssim_y": jnp.mean(ssim_y(sr, hr, crop_border))}


@functools.partial(jax.jit, static_argnums=1)
def bicubic_pair(hr, scale: int):
  """(LR input, its bicubic upscale) of an HR batch."""
  lr = downscale(hr, scale)
  return lr, bicubic_resize(lr, hr.shape[1:3])


def evaluate(apply: Callable, params, hr_images: Sequence[np.ndarray], scale: int) -> Dict[str, float]:
  """`apply(params, lr) -> sr` (jit it once) and the bicubic baseline on each HR image (its LR by bicubic
  downscale), border crop = scale: {'psnr_y', 'ssim_y', 'bicubic_psnr_y', 'bicubic_ssim_y'},
  averaged over images."""
  rows = []
  for hr in hr_images:
    hr = jnp.asarray(to_unit(mod_crop(hr, scale)))[None]
    lr, bicubic = bicubic_pair(hr, scale)
    rows.append({**score(apply(params, lr), hr, scale),
                 **{f"bicubic_{k}": v for k, v in score(bicubic, hr, scale).items()}})
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def train_batches(images: Sequence[np.ndarray], hr_size: int, global_batch_size: int, seed: int,
                  start: int) -> Iterator[Dict[str, np.ndarray]]:
  """This process's rows of the HR patches of steps start + 1, start + 2, ...: those of step i come
  from `np.random.default_rng([seed, i, process index])` alone, so any step's batch can be redrawn."""
  local = global_batch_size // jax.process_count()
  for step in itertools.count(start + 1):
    rng = np.random.default_rng([seed, step, jax.process_index()])
    yield {"hr": sample_patches(rng, images, hr_size, local)}


def train(config: ml_collections.ConfigDict, workdir: str, model, train_images: Sequence[np.ndarray],
          eval_sets: Dict[str, Sequence[np.ndarray]]) -> Tuple[TrainState, Dict[str, float]]:
  """Trains `model` (`(lr, *, train) -> (sr, features)`) on random HR patches of `train_images` for
  `config.total_steps`, resuming from `workdir`'s newest checkpoint. Every `eval_every` steps and at the
  end writes '<set>/psnr_y', '<set>/ssim_y' and bicubic's '<set>/bicubic_psnr_y', '.../bicubic_ssim_y'
  for each of `eval_sets` (HR images; border crop = scale). Returns (final state, last evaluation)."""
  hr_size = config.patch_size * config.scale
  if any(min(im.shape[:2]) < hr_size for im in train_images):
    raise UserError(f"training images must be at least {hr_size} px on each side (patch_size x scale)")
  if config.batch_size % jax.process_count():
    raise UserError(f"batch_size {config.batch_size} does not split over {jax.process_count()} processes")
  mesh = sharding.make_mesh(config.mesh.to_dict())
  schedule = optim.make_schedule(config, 1, config.total_steps)  # one "epoch" per step
  tx = optim.make_optimizer(config, schedule)
  with loop.Run(workdir, config, keep=config.keep_checkpoints, checkpoint_every=config.checkpoint_every) as run:
    # `head` matters only for `config.init_from` weights: the RGB output conv is the part to reset.
    state, shardings, meta = restore_or_init(config, model, tx, (config.patch_size,) * 2 + (3,), mesh,
                                             run.checkpoints, head="conv_last")
    start = run.resume(meta, seed=config.seed, global_batch=config.batch_size, hr_size=hr_size)
    step_fn = sharding.compile_together(
        jax.jit(make_train_step(model, tx, schedule, config),
                in_shardings=(shardings, sharding.batch_sharding(mesh)),
                out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0), "sr train step")
    apply = jax.jit(lambda params, lr: model.apply({"params": params}, lr)[0])

    def evaluate_sets(state):
      params = eval_params(state, config)
      return {f"{name}/{k}": v for name, images in eval_sets.items()
              for k, v in evaluate(apply, params, images, config.scale).items()}

    batches = train_batches(train_images, hr_size, config.batch_size, config.seed, start)
    return run.steps(state, step_fn, (global_batch(mesh, b) for b in batches), total_steps=config.total_steps,
                     evaluate=evaluate_sets, log_every=config.log_every, eval_every=config.eval_every,
                     desc=config.name)
