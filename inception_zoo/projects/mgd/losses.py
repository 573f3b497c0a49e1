"""MGD's unlabelled-data losses, as the official code computes them (JayQine/MGD-SSSS,
`city8.resnet18_deeplabv3plus/`): CutMix box masks (`mask_gen.py`, `BoxMaskGenerator.generate_params`, shared with
CPS), the pixel-level cross pseudo-supervision, the image-level semantic-sensitive loss and the region-level
content-aware loss (`train.py`'s training loop, with `criterion.py`'s `CriterionCosineSimilarity`). Tensors are
NHWC; each loss is returned before its weight (`config.lambda_1`, `config.lambda_2`) and stops the gradient through
the teacher, whose forward the official code runs under `torch.no_grad()` (`network.py`, steps 2 and 3).
"""
from typing import Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.train.segmentation import pixel_cross_entropy


def box_masks(rng, n: int, shape: Sequence[int], prop_range: Tuple[float, float] = (0.25, 0.5), n_boxes: int = 3,
              random_aspect_ratio: bool = True, prop_by_area: bool = True, within_bounds: bool = True,
              invert: bool = True) -> np.ndarray:
  """`BoxMaskGenerator.generate_params(n, shape, rng)` (mask_gen.py) as (n, H, W, 1) float32, 1 where the mixed
  image takes the second image. The defaults are MGD's config (`cutmix_mask_prop_range`, `cutmix_boxmask_*`).
  `rng.uniform` is called in the official order with the same sizes, so one `np.random.RandomState` seed gives
  the official masks (the official collate draws from the global `np.random`)."""
  shape = tuple(int(s) for s in shape)
  if prop_by_area:
    mask_props = rng.uniform(low=prop_range[0], high=prop_range[1], size=(n, n_boxes))
    zero_mask = mask_props == 0.0  # a zero area would give NaN through the log below
    if random_aspect_ratio:
      y_props = np.exp(rng.uniform(low=0.0, high=1.0, size=(n, n_boxes)) * np.log(mask_props))
      x_props = mask_props / y_props
    else:
      y_props = x_props = np.sqrt(mask_props)
    fac = np.sqrt(1.0 / n_boxes)
    # in place as in the official code: with a fixed aspect ratio y_props and x_props are one array, so the box
    # sides are scaled by fac twice (1 / n_boxes, not its square root); MGD's config draws the aspect ratio
    y_props *= fac
    x_props *= fac
    y_props[zero_mask] = 0
    x_props[zero_mask] = 0
  else:
    if random_aspect_ratio:
      y_props = rng.uniform(low=prop_range[0], high=prop_range[1], size=(n, n_boxes))
      x_props = rng.uniform(low=prop_range[0], high=prop_range[1], size=(n, n_boxes))
    else:
      x_props = y_props = rng.uniform(low=prop_range[0], high=prop_range[1], size=(n, n_boxes))
    fac = np.sqrt(1.0 / n_boxes)
    y_props *= fac  # in place, so again twice with a fixed aspect ratio
    x_props *= fac

  sizes = np.round(np.stack([y_props, x_props], axis=2) * np.array(shape)[None, None, :])
  if within_bounds:
    positions = np.round((np.array(shape) - sizes) * rng.uniform(low=0.0, high=1.0, size=sizes.shape))
    rectangles = np.append(positions, positions + sizes, axis=2)
  else:
    centres = np.round(np.array(shape) * rng.uniform(low=0.0, high=1.0, size=sizes.shape))
    rectangles = np.append(centres - sizes * 0.5, centres + sizes * 0.5, axis=2)

  masks = np.zeros((n,) + shape) if invert else np.ones((n,) + shape)
  for i, sample_rectangles in enumerate(rectangles):
    for y0, x0, y1, x1 in sample_rectangles:
      # int() truncates toward zero and negative starts index from the end, exactly as the official slicing does
      box = (i, slice(int(y0), int(y1)), slice(int(x0), int(x1)))
      masks[box] = 1 - masks[box]
  return masks[..., None].astype(np.float32)


def mix(a, b, mask):
  """CutMix: `a * (1 - mask) + b * mask` (train.py's `unsup_imgs_mixed` and `logits_cons_tea_*` lines: images and
  teacher logits are mixed with the same mask, so the logits must be at the mask's resolution)."""
  return a * (1 - mask) + b * mask


def cross_pseudo_loss(student_logits, teacher_logits):
  """train.py's `criterion(logits_cons_stu_1, ps_label_k)`: `nn.CrossEntropyLoss(ignore_index=255)` of the student's
  logits against the teacher's argmax (`torch.max(logits_cons_tea_k, dim=1)`). Logits are (B, H, W, K)."""
  labels = jnp.argmax(jax.lax.stop_gradient(teacher_logits), axis=-1)
  return pixel_cross_entropy(student_logits, labels)


def _pooling_matrix(n_in: int, n_out: int) -> np.ndarray:
  # PyTorch's adaptive pooling bins: [floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out)), overlapping when
  # n_out does not divide n_in
  m = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    start, end = i * n_in // n_out, -(-(i + 1) * n_in // n_out)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x, size: Union[int, Tuple[int, int]]):
  """`F.adaptive_avg_pool2d(x, size)` on NHWC: each output cell the mean of its bin of rows and columns, as two
  constant averaging matrices (static shapes, so this jits; two matmuls compile faster than a slice per bin)."""
  oh, ow = (size, size) if isinstance(size, int) else size
  rows, cols = _pooling_matrix(x.shape[1], oh), _pooling_matrix(x.shape[2], ow)
  # full float32 matmuls: TF32 on GPUs would round the features to 10 mantissa bits
  x = jnp.einsum("oh,bhwc->bowc", rows.astype(x.dtype), x, precision=jax.lax.Precision.HIGHEST)
  return jnp.einsum("pw,bowc->bopc", cols.astype(x.dtype), x, precision=jax.lax.Precision.HIGHEST)


def image_level_loss(student_logits, teacher_logits):
  """train.py's `sem_sens_loss` before `config.lambda_1`: `torch.sum(torch.abs(cls_logit1 - cls_logit3))` with
  `cls_logit = F.adaptive_avg_pool2d(logits, (1, 1))`, a sum (not a mean) over the batch and the classes."""
  s = adaptive_avg_pool(student_logits.astype(jnp.float32), 1)
  t = adaptive_avg_pool(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), 1)
  return jnp.sum(jnp.abs(s - t))


def cosine_self_similarity(features, grid: int = 7):
  """train.py's `criterion_cos(q, q)` with `q = F.adaptive_avg_pool2d(feat, (grid, grid)).flatten(start_dim=2)`:
  the (B, grid * grid, grid * grid) cosine similarities of the pooled cells, row-major over (h, w) as the
  flatten is. `CriterionCosineSimilarity` has no epsilon (its `self.ep` is unused); here a zero norm is raised to
  1e-12, as sqrt(max(|q|^2, 1e-24)) so that the gradient stays finite there too."""
  q = adaptive_avg_pool(features.astype(jnp.float32), grid)
  q = q.reshape(q.shape[0], -1, q.shape[-1])
  norm = jnp.sqrt(jnp.maximum(jnp.sum(q * q, axis=-1), 1e-24))
  # full float32 matmul: TF32 on GPUs would change the similarities in the 3rd decimal
  sim = jnp.einsum("bmc,bnc->bmn", q, q, precision=jax.lax.Precision.HIGHEST)
  return sim / norm[:, :, None] / norm[:, None, :]


def region_level_loss(student_features, teacher_features, grid: int = 7):
  """train.py's `content_loss` before `config.lambda_2`: `F.mse_loss(self_sim_matrix_1, self_sim_matrix_2)`, the mean
  over every entry of the squared difference of the two self-similarity matrices. Features are the decoder's
  (B, h, w, 256) output (`aspp_feat`, the second of the network's three outputs)."""
  s = cosine_self_similarity(student_features, grid)
  t = cosine_self_similarity(jax.lax.stop_gradient(teacher_features), grid)
  return jnp.mean(jnp.square(s - t))
