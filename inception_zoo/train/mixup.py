"""Mixup and CutMix on the device, inside the jitted train step, with soft (label-smoothed) targets.

Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018: images and
targets become lam * (x_i, y_i) + (1 - lam) * (x_j, y_j), lam ~ Beta(alpha, alpha).
Yun, Han, Oh, Chun, Choe, Yoo, "CutMix: Regularization Strategy to Train Strong Classifiers with
Localizable Features", ICCV 2019: a box of area (1 - lam) of x_i is replaced by the same box of x_j,
and lam is recomputed from the box as clipped by the image border.

Semantics of timm's `Mixup` in its 'batch' mode (what DeiT, ConvNeXt, Swin and InceptionNeXt train
with: mixup_alpha 0.8, cutmix_alpha 1.0, prob 1.0, switch_prob 0.5): one draw per batch, whether to
mix at all (`prob`), CutMix or Mixup when both alphas are positive (`switch_prob`), one lam, one box;
the partner of example i is example B-1-i (the batch reversed), and the targets are timm's
`mixup_target`: label-smoothed one-hot vectors mixed with the same lam.

`config.mixup`: mixup_alpha, cutmix_alpha (0 turns either off; both 0 leaves the step untouched),
prob, switch_prob.
"""
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception_zoo.errors import UserError


class MixParams(NamedTuple):
  lam: jax.Array         # weight of the batch itself; 1 = no mixing
  use_cutmix: jax.Array  # bool: CutMix box instead of Mixup blending
  center: jax.Array      # (2,) int32 centre (row, column) of the CutMix box


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether `config.mixup` asks for mixing at all (checking its values on the way)."""
  m = config.get("mixup")
  if m is None:
    return False
  if m.mixup_alpha < 0 or m.cutmix_alpha < 0 or not 0 <= m.prob <= 1 or not 0 <= m.switch_prob <= 1:
    raise UserError(f"config.mixup needs alphas >= 0 and prob, switch_prob in [0, 1]; got {m.to_dict()}")
  return (m.mixup_alpha > 0 or m.cutmix_alpha > 0) and m.prob > 0


def soft_targets(labels: jax.Array, num_classes: int, smoothing: float = 0.0) -> jax.Array:
  """One-hot targets with label smoothing: 1 - smoothing + smoothing / K on the label, smoothing / K
  elsewhere (Szegedy et al. 2016; timm's values)."""
  targets = jax.nn.one_hot(labels, num_classes)
  return optax.smooth_labels(targets, smoothing) if smoothing else targets


def sample(rng: jax.Array, image_hw: Tuple[int, int], mixup_alpha: float, cutmix_alpha: float,
           prob: float = 1.0, switch_prob: float = 0.5) -> MixParams:
  """timm's `Mixup._params_per_batch` and the centre `rand_bbox` draws, with jax.random.

  The alphas are Python numbers: which of Mixup / CutMix can happen is fixed when the step is traced.
  """
  k_apply, k_switch, k_mixup, k_cutmix, k_center = jax.random.split(rng, 5)
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(k_switch) < switch_prob
  else:
    use_cutmix = jnp.asarray(cutmix_alpha > 0)
  one = jnp.ones([], jnp.float32)
  lam_mixup = jax.random.beta(k_mixup, mixup_alpha, mixup_alpha) if mixup_alpha > 0 else one
  lam_cutmix = jax.random.beta(k_cutmix, cutmix_alpha, cutmix_alpha) if cutmix_alpha > 0 else one
  apply = jax.random.uniform(k_apply) < prob
  lam = jnp.where(apply, jnp.where(use_cutmix, lam_cutmix, lam_mixup), one)
  center = jax.random.randint(k_center, (2,), 0, jnp.array(image_hw))
  return MixParams(lam, use_cutmix & apply, center)


def cutmix_box(image_hw: Tuple[int, int], lam: jax.Array, center: jax.Array):
  """timm's `rand_bbox` for a drawn centre: a box of sides int(side * sqrt(1 - lam)) centred there,
  clipped by the image. Returns (top, bottom, left, right), bottom/right exclusive."""
  h, w = image_hw
  ratio = jnp.sqrt(1.0 - lam)
  cut_h, cut_w = (jnp.floor(h * ratio).astype(jnp.int32), jnp.floor(w * ratio).astype(jnp.int32))
  top = jnp.clip(center[0] - cut_h // 2, 0, h)
  bottom = jnp.clip(center[0] + (cut_h + 1) // 2, 0, h)
  left = jnp.clip(center[1] - cut_w // 2, 0, w)
  right = jnp.clip(center[1] + (cut_w + 1) // 2, 0, w)
  return top, bottom, left, right


def mix(images: jax.Array, targets: jax.Array, params: MixParams) -> Tuple[jax.Array, jax.Array]:
  """Mixes a batch (B, H, W, C) and its soft targets (B, K) with example B-1-i as i's partner.

  CutMix corrects lam to the box's clipped area (timm's correct_lam), so the targets weigh each
  image by the pixels it contributes. With lam = 1 both are returned unchanged.
  """
  h, w = images.shape[1:3]
  # The reversed global batch: under a data-sharded mesh XLA moves the partner rows between devices.
  partner = jnp.flip(images, axis=0)
  top, bottom, left, right = cutmix_box((h, w), params.lam, params.center)
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  in_box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  cut_lam = 1.0 - ((bottom - top) * (right - left)).astype(jnp.float32) / (h * w)
  lam = jnp.where(params.use_cutmix, cut_lam, params.lam).astype(jnp.float32)
  blended = images * lam.astype(images.dtype) + partner * (1.0 - lam).astype(images.dtype)
  cut = jnp.where(in_box[None, :, :, None], partner, images)
  mixed = jnp.where(params.use_cutmix, cut, blended)
  return mixed, targets * lam + jnp.flip(targets, axis=0) * (1.0 - lam)


def mix_batch(rng: jax.Array, images: jax.Array, labels: jax.Array, num_classes: int,
              smoothing: float, config: ml_collections.ConfigDict) -> Tuple[jax.Array, jax.Array]:
  """Images and soft targets of one training batch: mixed per `config.mixup` when `enabled`."""
  targets = soft_targets(labels, num_classes, smoothing)
  if not enabled(config):
    return images, targets
  m = config.mixup
  params = sample(rng, images.shape[1:3], m.mixup_alpha, m.cutmix_alpha, m.prob, m.switch_prob)
  return mix(images, targets, params)
