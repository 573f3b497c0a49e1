"""Dataset distillation by squeeze, recover and relabel, with CDA's curriculum on the recovery crops.

SRe2L: Yin, Xing and Shen, "Squeeze, Recover and Relabel: Dataset Condensation at ImageNet Scale From A
New Perspective", NeurIPS 2023. CDA: Yin and Shen, "Dataset Distillation via Curriculum Data Synthesis
in Large Data Era", TMLR 2024 (arXiv:2311.18838). Facts from the official code (VILA-Lab/SRe2L,
`CDA/recover_cda_in1k.py`, `CDA/utils.py`, `SRe2L/validate/train_FKD.py`):
- Squeeze: a classifier with BatchNorm trained on the real data (`squeeze`).
- Recover: synthetic images from noise minimise CE(f(view(x)), y) + r_bn sum_l w_l (||mu_l(view) -
  mu_l^BN||_2 + ||var_l(view) - var_l^BN||_2) over the teacher's BatchNorm layers in inference mode
  (biased batch variance; w = `first_multiplier` on the first layer, 1 after); Adam with betas (0.5, 0.9),
  cosine learning rate without warm-up, pixels clipped to the valid range after every step. The view is
  one RandomResizedCrop box and one horizontal flip for the whole batch, then a random roll of up to
  `jitter` pixels (`recovery_view`).
- CDA: the crop scale's lower bound goes from 1 (the whole image) to 0.08 over the first `milestone`
  fraction of the steps (step / linear / cosine; the README's commands use cosine with milestone 1);
  milestone 0 is SRe2L, scale [0.08, 1] throughout (`min_crop_scale`).
- Relabel: the teacher's logits on RandomResizedCrop(0.08, 1) + flip views of each distilled image; the
  student, trained on those views only, minimises KL(softmax(t / T) || softmax(s / T)) (T = 3, no T^2).
Our reading: the crop box is drawn once, the whole image where it does not fit (torchvision draws up
to 10 times before that fallback); the resize is bilinear without antialiasing; the recovery noise
has a standard deviation of a quarter of the pixel range (N(0, 1) in ImageNet's normalised range, about
4.5 wide); students trained by `fullbatch.fit` (parameters only) get their BatchNorm running statistics
from one batch of views afterwards (`calibrate_batch_stats`), where PyTorch keeps a running average.

Everything here works with any Flax model that has `nn.BatchNorm` layers and takes `train=`: the
statistics are read by intercepting BatchNorm calls (`nn.intercept_methods`), so no model is edited.
"""
import contextlib
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter
from inception_zoo.train.distill import kl_to_teachers
from inception_zoo.train.fullbatch import fit

CURRICULA = ("step", "linear", "cosine")


class BNConvNet(nn.Module):
  """The digits setting's teacher and student: [3x3 conv -> BatchNorm -> ReLU -> 2x2 average pool] per
  width, then a linear classifier. Returns (logits, features) like the zoo's classifiers."""
  num_classes: int = 10
  widths: Sequence[int] = (16, 32)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    for i, width in enumerate(self.widths):
      x = nn.Conv(width, (3, 3), use_bias=False, name=f"conv{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, name=f"bn{i}")(x)
      x = nn.avg_pool(nn.relu(x), (2, 2), (2, 2))
    features = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, name="head")(features), features


def _logits(model: nn.Module, variables, x, **kwargs):
  out = model.apply(variables, x, train=False, **kwargs)
  if kwargs.get("mutable"):
    out, updates = out
    return (out[0] if isinstance(out, tuple) else out), updates
  return out[0] if isinstance(out, tuple) else out


# --- BatchNorm statistics of any model --------------------------------------------------------------


def batch_moments(module: nn.BatchNorm, x) -> Tuple[jax.Array, jax.Array]:
  """Mean and biased variance of a BatchNorm layer's input over every axis but its feature axes: the
  statistics the layer normalises with in training mode."""
  axes = module.axis if isinstance(module.axis, tuple) else (module.axis,)
  features = {a % x.ndim for a in axes}
  reduce = tuple(a for a in range(x.ndim) if a not in features)
  x = x.astype(jnp.float32)
  return jnp.mean(x, reduce), jnp.var(x, reduce)


@contextlib.contextmanager
def _on_batchnorm(fn: Callable[[nn.BatchNorm, jax.Array], None]):
  """Within the context, fn(layer, input) runs before every nn.BatchNorm call of any model."""

  def intercept(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and isinstance(context.module, nn.BatchNorm) and args:
      fn(context.module, args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(intercept):
    yield


def bn_matching(model: nn.Module, variables, x, *, first_multiplier: float = 1.0):
  """(logits, BN loss) of the model in inference mode on `x`: SRe2L's sum over its BatchNorm layers of
  ||batch mean - running mean||_2 + ||batch variance - running variance||_2, the first layer's term
  weighted by `first_multiplier`. Zero exactly when every layer sees its running statistics."""
  terms = []

  def record(layer, h):
    mean, var = batch_moments(layer, h)
    # safe_norm: a zero gradient (not NaN) where a layer's statistics match exactly.
    terms.append(optax.safe_norm(mean - layer.get_variable("batch_stats", "mean"), 0.0)
                 + optax.safe_norm(var - layer.get_variable("batch_stats", "var"), 0.0))

  with _on_batchnorm(record):
    logits = _logits(model, variables, x)
  if not terms:
    raise UserError(f"{type(model).__name__} has no nn.BatchNorm layer: recovery matches BatchNorm "
                    f"statistics")
  weights = jnp.asarray([first_multiplier] + [1.0] * (len(terms) - 1))
  return logits, jnp.sum(weights * jnp.stack(terms))


def calibrate_batch_stats(model: nn.Module, variables, x):
  """The model's `batch_stats` with every BatchNorm's running statistics set to the batch statistics of
  `x` (biased variance, as training mode uses): the population statistics when `x` is the whole set.
  Each layer sees inputs normalised by the layers before it, as in training mode."""

  def put(layer, h):
    mean, var = batch_moments(layer, h)
    old = layer.get_variable("batch_stats", "mean")
    layer.put_variable("batch_stats", "mean", mean.astype(old.dtype))
    layer.put_variable("batch_stats", "var", var.astype(old.dtype))

  with _on_batchnorm(put):
    _, updates = _logits(model, variables, x, mutable=["batch_stats"])
  return updates["batch_stats"]


# --- the crops -----------------------------------------------------------------------------------


def min_crop_scale(step, num_steps: int, milestone=1.0, mode: str = "cosine", lowest: float = 0.08):
  """CDA's curriculum: RandomResizedCrop's lower scale bound at `step` of `num_steps`, from 1 (global
  views) to `lowest` (local views) over the first `milestone` x `num_steps` steps, `lowest` after.
  `mode` step keeps 1 until the milestone; linear and cosine decrease. Milestone 0 is SRe2L's fixed
  [lowest, 1]. `step` and `milestone` may be arrays (one schedule per run)."""
  if mode not in CURRICULA:
    raise UserError(f"unknown curriculum '{mode}' (one of {', '.join(CURRICULA)})")
  step = jnp.asarray(step, jnp.float32)
  end = jnp.asarray(milestone, jnp.float32) * num_steps
  progress = step / jnp.maximum(end, 1.0)
  if mode == "step":
    eased = jnp.ones_like(progress)
  elif mode == "linear":
    eased = 1.0 - progress
  else:
    eased = (1.0 + jnp.cos(jnp.pi * progress)) / 2
  return jnp.where(step < end, lowest + (1.0 - lowest) * eased, lowest)


def random_box(key, height: int, width: int, min_scale, max_scale=1.0,
               ratio: Tuple[float, float] = (3 / 4, 4 / 3)):
  """torchvision's RandomResizedCrop box (top, left, h, w) in whole pixels: area fraction uniform in
  [min_scale, max_scale], log aspect ratio uniform in log(ratio); a box that does not fit the image is
  the whole image. Our reading of torchvision's 10 draws before that fallback: one draw, a fixed cost
  per step; at scale 1 both give the whole image (for images of aspect ratio 1)."""
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(k_area, (), minval=min_scale, maxval=max_scale)
  aspect = jnp.exp(jax.random.uniform(k_ratio, (), minval=np.log(ratio[0]), maxval=np.log(ratio[1])))
  h = jnp.maximum(jnp.round(jnp.sqrt(area / aspect)), 1)
  w = jnp.maximum(jnp.round(jnp.sqrt(area * aspect)), 1)
  fits = (h <= height) & (w <= width)
  h, w = jnp.where(fits, h, height), jnp.where(fits, w, width)
  top = jnp.floor(jax.random.uniform(k_top) * (height - h + 1))
  left = jnp.floor(jax.random.uniform(k_left) * (width - w + 1))
  return top, left, h, w


def _interpolation(start, length, size_in: int, size_out: int):
  """(size_out, size_in) bilinear weights that resample [start, start + length) to size_out pixels:
  half-pixel centres, clamped to the box (torch's bilinear, align_corners=False, on the cropped image)."""
  p = start + (jnp.arange(size_out) + 0.5) * length / size_out - 0.5
  p = jnp.clip(p, start, start + length - 1)
  i0 = jnp.floor(p)
  frac = (p - i0)[:, None]
  grid = jnp.arange(size_in)
  return (grid == i0[:, None]) * (1 - frac) + (grid == i0[:, None] + 1) * frac


def resized_crop(images, box, size: Tuple[int, int]):
  """Box (top, left, h, w) of (N, H, W, C) images resized bilinearly to `size`. Two interpolation
  matrices rather than a slice: the box changes every step, the shapes do not (one compile), and the
  gradient reaches every pixel of the box."""
  top, left, h, w = box
  rows = _interpolation(top, h, images.shape[1], size[0])
  cols = _interpolation(left, w, images.shape[2], size[1])
  return jnp.einsum("ph,nhwc,qw->npqc", rows, images, cols)


def recovery_view(key, images, min_scale, jitter: int):
  """What the teacher scores at one recovery step: one crop box of scale [min_scale, 1] and one flip
  for the whole batch (torchvision transforms on a batch tensor), then a roll of 0..jitter pixels on
  each axis."""
  k_box, k_flip, k_roll = jax.random.split(key, 3)
  height, width = images.shape[1:3]
  x = resized_crop(images, random_box(k_box, height, width, min_scale), (height, width))
  x = jnp.where(jax.random.bernoulli(k_flip), x[:, :, ::-1], x)
  shift = jax.random.randint(k_roll, (2,), 0, jitter + 1)
  return jnp.roll(x, (shift[0], shift[1]), axis=(1, 2))


def relabel_views(key, images, min_scale: float = 0.08):
  """The relabelling views: an independent crop box of scale [min_scale, 1] and flip per image."""

  def one(k, image):
    k_box, k_flip = jax.random.split(k)
    x = resized_crop(image[None], random_box(k_box, *image.shape[:2], min_scale), image.shape[:2])[0]
    return jnp.where(jax.random.bernoulli(k_flip), x[:, ::-1], x)

  return jax.vmap(one)(jax.random.split(key, len(images)), images)


# --- squeeze, recover, relabel -----------------------------------------------------------------------


def squeeze(model: nn.Module, images, labels, key, *, num_steps: int, batch_size: int,
            learning_rate: float, writer: Optional[MetricWriter] = None, log_every: int = 100):
  """The teacher: cross-entropy with Adam on random mini-batches of the real data, then its BatchNorm
  running statistics computed on the whole set. Returns its variables {'params', 'batch_stats'}."""
  variables = model.init(key, images[:1], train=False)
  batch_stats = variables["batch_stats"]

  def loss_fn(params, k):
    idx = jax.random.choice(k, len(images), (batch_size,), replace=False)
    (logits, _), _ = model.apply({"params": params, "batch_stats": batch_stats}, images[idx], train=True,
                                 mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels[idx])}

  params, _ = fit(loss_fn, variables["params"], optax.adam(learning_rate), num_steps, key=key,
                  has_aux=True, log_every=log_every, writer=writer, prefix="squeeze/")
  calibrate = jax.jit(calibrate_batch_stats, static_argnums=0)
  batch_stats = calibrate(model, {"params": params, "batch_stats": batch_stats}, images)
  return {"params": params, "batch_stats": batch_stats}


def _clip_params(lo: float, hi: float) -> optax.GradientTransformation:
  """Makes the update land the parameters inside [lo, hi] (the official clip after every step)."""

  def update(updates, state, params=None):
    return jax.tree.map(lambda u, p: jnp.clip(p + u, lo, hi) - p, updates, params), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def recover(model: nn.Module, variables, labels, keys, milestones, *, image_shape: Sequence[int],
            num_steps: int, mode: str = "cosine", lowest: float = 0.08, learning_rate: float = 0.25,
            r_bn: float = 0.01, first_multiplier: float = 1.0, jitter: int = 0,
            value_range: Tuple[float, float] = (-1.0, 1.0), writer: Optional[MetricWriter] = None,
            log_every: int = 100):
  """Synthetic images of `labels` recovered from the teacher, one independent run per key and milestone
  (milestone 0: SRe2L; > 0: CDA's curriculum of `mode`), all in one compiled loop: the runs' losses add
  and Adam and the clip act per pixel, so they do not interact. Returns (runs, len(labels), *image_shape)."""
  keys = jnp.asarray(keys)
  milestones = jnp.asarray(milestones, jnp.float32)
  if keys.shape[:1] != milestones.shape:
    raise UserError(f"recover: {len(keys)} keys for {len(milestones)} milestones (one of each per run)")
  lo, hi = value_range
  noise = jax.vmap(lambda k: jax.random.normal(k, (len(labels), *image_shape)))(keys)
  images = jnp.clip(noise * (hi - lo) / 4 + (hi + lo) / 2, lo, hi)
  adam = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps), b1=0.5, b2=0.9, eps=1e-8)
  tx = optax.chain(adam, _clip_params(lo, hi))

  def one_run(images, key, min_scale):
    view = recovery_view(key, images, min_scale, jitter)
    logits, bn = bn_matching(model, variables, view, first_multiplier=first_multiplier)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()
    return ce + r_bn * bn, (ce, bn)

  def loss_fn(images, key, step):
    scales = min_crop_scale(step.astype(jnp.float32), num_steps, milestones, mode, lowest)
    losses, (ce, bn) = jax.vmap(one_run)(images, jax.random.split(key, len(milestones)), scales)
    return jnp.sum(losses), {"ce": jnp.mean(ce), "bn": jnp.mean(bn), "min_crop_scale": jnp.max(scales)}

  images, _ = fit(loss_fn, images, tx, num_steps, key=keys[0], has_aux=True, log_every=log_every,
                  writer=writer, prefix="recover/", pass_step=True)
  return images


def relabel(model: nn.Module, variables, views):
  """SRe2L's relabelling: the squeezed teacher's logits on each view (inference mode), the soft target."""
  return jax.lax.stop_gradient(_logits(model, variables, views))


def soft_label_loss(student_logits, teacher_logits, temperature: float):
  """KL(softmax(teacher / T) || softmax(student / T)) averaged over the batch (official train_FKD.py:
  KLDivLoss(batchmean), no T^2 factor)."""
  return kl_to_teachers(jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature),
                        student_logits / temperature).mean()


def train_students(student: nn.Module, teacher: nn.Module, teacher_variables, images, key, *,
                   num_steps: int, learning_rate: float, weight_decay: float, temperature: float,
                   min_scale: float = 0.08, calibration_views: int = 8,
                   hard_labels: Optional[Sequence[Optional[jax.Array]]] = None,
                   writer: Optional[MetricWriter] = None, log_every: int = 100) -> Dict[str, Any]:
  """One student per distilled set in `images` (runs, n, H, W, C), trained in one compiled loop on
  relabelled views only: each step is one epoch, every image in a fresh view with the teacher's soft
  label. AdamW with a cosine learning rate. Returns the students' stacked variables, their BatchNorm
  statistics computed on `calibration_views` views of each image.

  `hard_labels[r]`, where given, trains run r on those class labels by cross-entropy instead of the
  teacher's soft labels (the dataset-distillation literature's random-real baseline), all else equal."""
  # Each run's keys depend on its index only, not on how many runs share the loop.
  per_run = lambda k: jax.vmap(lambda r: jax.random.fold_in(k, r))(jnp.arange(len(images)))
  variables = jax.vmap(lambda k, x: student.init(k, x[:1], train=False))(
      per_run(jax.random.fold_in(key, 2)), images)
  hard_labels = hard_labels or [None] * len(images)

  def one_run(params, batch_stats, x, k, y):
    views = relabel_views(k, x, min_scale)
    (logits, _), _ = student.apply({"params": params, "batch_stats": batch_stats}, views, train=True,
                                   mutable=["batch_stats"])
    if y is not None:
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return soft_label_loss(logits, relabel(teacher, teacher_variables, views), temperature)

  def loss_fn(params, k):
    # One copy of the student per run: vmapped weights make every convolution a grouped one and
    # lax.map a loop, both 5x slower per step on CPU than this unrolled sum (which compiles longer).
    losses = jnp.stack([one_run(*jax.tree.map(lambda a: a[r], (params, variables["batch_stats"], images)),
                                jax.random.fold_in(k, r),
                                hard_labels[r]) for r in range(len(images))])
    return jnp.sum(losses), {"kl": jnp.mean(losses)}

  tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, num_steps), weight_decay=weight_decay)
  params, _ = fit(loss_fn, variables["params"], tx, num_steps, key=key, has_aux=True, log_every=log_every,
                  writer=writer, prefix="student/")

  @jax.jit
  def calibrate(params, batch_stats, x, k):
    views = jax.vmap(lambda kk: relabel_views(kk, x, min_scale))(jax.random.split(k, calibration_views))
    views = views.reshape(-1, *x.shape[1:])
    return calibrate_batch_stats(student, {"params": params, "batch_stats": batch_stats}, views)

  batch_stats = jax.vmap(calibrate)(params, variables["batch_stats"], images, per_run(jax.random.fold_in(key, 1)))
  return {"params": params, "batch_stats": batch_stats}


def accuracy(model: nn.Module, variables, images, labels) -> jax.Array:
  """Top-1 accuracy of the model in inference mode."""
  return jnp.mean(jnp.argmax(_logits(model, variables, images), -1) == labels)
