"""PixPro pre-training (Xie, Lin, Zhang, Cao, Lin, Hu, "Propagate Yourself: Exploring Pixel-Level
Consistency for Unsupervised Visual Representation Learning", CVPR 2021).

Two augmented views of an image go through an online network (backbone -> 1x1-conv projection head
-> pixel propagation module) and a momentum (EMA) target network (backbone -> projection head). A
feature-map cell of one view and a cell of the other are a positive pair when the centres of the
image regions they cover, in the original image, are closer than T = 0.7 bin diagonals (Sec. 3.1).
PixPro pulls the propagated online feature y_i towards the target feature x'_j of every positive j
(Sec. 3.3); PixContrast instead contrasts the online projections x_i against all target cells with
InfoNCE (Sec. 3.2). An optional BYOL-style instance branch (pooled projection + predictor, Sec. 3.5)
can be added to either; on its own it is the instance-level baseline.

What follows the official code (github.com/zdaxie/PixPro, contrast/models/PixPro.py, the 100/400-epoch
scripts) where the paper is silent:
  - the projection head is 1x1 conv -> BN -> ReLU -> 1x1 conv (2048 -> 4096 -> 256), as is the
    instance branch's predictor; the propagation's transform g is one 1x1 conv (`transform_layers=1`,
    the scripts' setting; 0 = identity, 2 = conv-BN-ReLU-conv);
  - the similarity is s_ij = max(cos(x_i, x_j), 0) ** gamma, gamma = 2, and g(x) is L2-normalised
    before the propagation y_i = sum_j s_ij g(x_j); y is L2-normalised after it;
  - the PixPro loss per image is -2 x the mean cosine over its positive pairs (the BYOL scaling:
    ||a - b||^2 = 2 - 2 cos for unit vectors), averaged over the batch, summed over both directions;
  - the target momentum m = 1 - (1 - m0) (cos(pi k / K) + 1) / 2, m0 = 0.99, is applied before the
    target's forward pass at step k (so the target of step 0 is already one EMA step old);
  - the distances are in coordinates normalised by the image's height and width, and divided by the
    larger of the two views' bin diagonals.
Our reading: the crop box is (ymin, xmin, ymax, xmax) in [0, 1] with pixel edges (the repo's
`pp.inception_crop(return_box=True)`; the official code uses pixel indices / (size - 1)); a view
flipped left-right stores its box with xmin and xmax swapped (the official convention: its cells'
centres then run from right to left; `pp.flip_view_lr`). views.py gives such views and
boxes from any image source (ImageNet with the official augmentation). PixContrast's negatives are
every target cell of the batch that is not a positive (the paper draws them from the other view and a
memory bank; the released code has no PixContrast). Both views go through the networks as one batch, so
BatchNorm sees their union (the official code runs them one after the other).

`pretrain` runs the step on the shared step loop (inception_zoo/train/loop.py): the state checkpoints to the workdir
and a restarted run resumes exactly where it stopped.
"""
from typing import Callable, Dict, Iterator, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception_zoo.errors import UserError
from inception_zoo.layers import l2_normalize
from inception_zoo.train import loop
from inception_zoo.train.state import TrainState, apply_gradients

PIXEL_LOSSES = ("pixpro", "pixcontrast")


def cell_centres(boxes: jax.Array, height: int, width: int) -> Tuple[jax.Array, jax.Array]:
  """Where the cells of a height x width feature map sit in the original image.

  boxes: (B, 4) crop boxes (ymin, xmin, ymax, xmax) in [0, 1]. Returns the centres (B, height *
  width, 2) as (y, x), row-major like a flattened feature map, and each view's bin diagonal (B,).
  """
  ymin, xmin, ymax, xmax = (boxes[:, i, None] for i in range(4))
  bin_h, bin_w = (ymax - ymin) / height, (xmax - xmin) / width
  cy = ymin + (jnp.arange(height) + 0.5) * bin_h  # (B, height)
  cx = xmin + (jnp.arange(width) + 0.5) * bin_w  # (B, width)
  centres = jnp.stack(jnp.broadcast_arrays(cy[:, :, None], cx[:, None, :]), -1)
  return centres.reshape(boxes.shape[0], height * width, 2), jnp.hypot(bin_h, bin_w)[:, 0]


def centre_distances(box1: jax.Array, box2: jax.Array, height: int, width: int) -> jax.Array:
  """(B, N, N) distances between the cell centres of view 1 (rows) and view 2 (columns), N = height
  x width, in units of the larger of the two views' bin diagonals."""
  c1, d1 = cell_centres(box1, height, width)
  c2, d2 = cell_centres(box2, height, width)
  dist = jnp.linalg.norm(c1[:, :, None] - c2[:, None, :], axis=-1)
  return dist / jnp.maximum(d1, d2)[:, None, None]


def positive_mask(box1: jax.Array, box2: jax.Array, height: int, width: int,
                  threshold: float = 0.7) -> jax.Array:
  """(B, N, N) 1.0 where cell i of view 1 and cell j of view 2 are a positive pair (Sec. 3.1)."""
  return (centre_distances(box1, box2, height, width) < threshold).astype(jnp.float32)


def propagate(features: jax.Array, values: jax.Array, gamma: float = 2.0) -> jax.Array:
  """The pixel propagation of Eq. (2)-(3) on flattened maps: features, values (B, N, C) ->
  y_i = sum_j max(cos(x_i, x_j), 0) ** gamma * values_j."""
  x = l2_normalize(features)
  similarity = jnp.maximum(jnp.einsum("bnc,bmc->bnm", x, x), 0.0) ** gamma
  return jnp.einsum("bnm,bmc->bnc", similarity, values)


class ProjectionHead(nn.Module):
  """1x1 conv -> BN -> ReLU -> 1x1 conv on the last axis (a map (B, H, W, C) or vectors (B, C))."""
  hidden_dim: int = 4096
  dim: int = 256

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Dense(self.hidden_dim, name="linear1")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn1")(x)
    return nn.Dense(self.dim, name="linear2")(nn.relu(x))


class PixelPropagation(nn.Module):
  """The PPM (Sec. 3.3): y_i = sum_j max(cos(x_i, x_j), 0) ** gamma * g(x_j), on a (B, H, W, C) map."""
  gamma: float = 2.0
  transform_layers: int = 1  # g: 0 identity, 1 a 1x1 conv, 2 conv-BN-ReLU-conv

  @nn.compact
  def __call__(self, x, *, train: bool):
    b, h, w, c = x.shape
    if self.transform_layers == 0:
      values = x
    elif self.transform_layers == 1:
      values = nn.Dense(c, name="transform")(x)
    elif self.transform_layers == 2:
      values = ProjectionHead(c, c, name="transform")(x, train=train)
    else:
      raise UserError(f"PixPro transform_layers must be 0, 1 or 2; got {self.transform_layers}")
    y = propagate(x.reshape(b, h * w, c), l2_normalize(values).reshape(b, h * w, c), self.gamma)
    return y.reshape(b, h, w, c)


class PixPro(nn.Module):
  """The online network (`__call__`) and the target network's forward pass (`target`, run with the
  EMA parameters: it uses a subset of the online parameters).

  `backbone(images, train=...)` returns (anything, {name: feature map}); `feature` names the map
  (C5 for the repo's ResNets). Outputs are L2-normalised: "pixel" (B, H, W, dim) the propagated
  features online, the projections on the target; "proj" the online projections (PixContrast);
  "instance" (B, dim) the instance branch (online: predictor output).
  """
  backbone: nn.Module
  feature: str = "C5"
  hidden_dim: int = 4096
  dim: int = 256
  gamma: float = 2.0
  transform_layers: int = 1
  pixel: bool = True
  instance: bool = False

  def setup(self):
    if not (self.pixel or self.instance):
      raise UserError("PixPro needs the pixel branch, the instance branch or both")
    if self.pixel:
      self.projector = ProjectionHead(self.hidden_dim, self.dim)
      self.propagation = PixelPropagation(self.gamma, self.transform_layers)
    if self.instance:
      self.instance_projector = ProjectionHead(self.hidden_dim, self.dim)
      self.predictor = ProjectionHead(self.hidden_dim, self.dim)

  def features(self, images, *, train: bool = False) -> jax.Array:
    _, maps = self.backbone(images, train=train)
    if self.feature not in maps:
      raise UserError(f"the backbone has no feature map '{self.feature}' (it has {', '.join(maps)})")
    return maps[self.feature]

  def __call__(self, images, *, train: bool = False) -> Dict[str, jax.Array]:
    f = self.features(images, train=train)
    out = {}
    if self.pixel:
      z = self.projector(f, train=train)
      out["proj"] = l2_normalize(z)
      out["pixel"] = l2_normalize(self.propagation(z, train=train))
    if self.instance:
      # As the official code: the predictor acts on the projected map, then the map is pooled.
      p = self.predictor(self.instance_projector(f, train=train), train=train)
      out["instance"] = l2_normalize(jnp.mean(p, axis=(1, 2)))
    return out

  def target(self, images, *, train: bool = False) -> Dict[str, jax.Array]:
    f = self.features(images, train=train)
    out = {}
    if self.pixel:
      out["pixel"] = l2_normalize(self.projector(f, train=train))
    if self.instance:
      out["instance"] = l2_normalize(jnp.mean(self.instance_projector(f, train=train), axis=(1, 2)))
    return out


def pixpro_loss(online: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """One direction of the PixPro loss: online (B, N, C) propagated, target (B, M, C), both unit
  vectors, mask (B, N, M) of positive pairs. -2 x the per-image mean cosine over positive pairs;
  an image without positives contributes 0 (the official 1e-6 in the denominator)."""
  cos = jnp.einsum("bnc,bmc->bnm", online, target)
  per_image = jnp.sum(cos * mask, (1, 2)) / (jnp.sum(mask, (1, 2)) + 1e-6)
  return -2.0 * jnp.mean(per_image)


def pixcontrast_loss(online: jax.Array, target: jax.Array, mask: jax.Array,
                     temperature: float = 0.3) -> jax.Array:
  """One direction of PixContrast's InfoNCE (Eq. 1): for every online cell i with a positive,
  -log(sum_pos exp(cos / tau) / sum_{pos + neg} exp(cos / tau)), negatives all other target cells of
  the batch (other images' cells and this image's non-positive cells); averaged over those cells."""
  b, n, _ = online.shape
  m = target.shape[1]
  logits = jnp.einsum("bnc,dmc->bndm", online, target).reshape(b * n, b * m) / temperature
  positive = (jnp.eye(b)[:, None, :, None] * mask[:, :, None, :]).reshape(b * n, b * m) > 0
  has_positive = jnp.any(positive, axis=1)
  log_positive = jax.nn.logsumexp(jnp.where(positive, logits, -jnp.inf), axis=1)
  per_cell = jax.nn.logsumexp(logits, axis=1) - jnp.where(has_positive, log_positive, 0.0)
  return jnp.sum(jnp.where(has_positive, per_cell, 0.0)) / jnp.maximum(jnp.sum(has_positive), 1)


def instance_loss(online: jax.Array, target: jax.Array) -> jax.Array:
  """One direction of the BYOL-style instance loss: -2 x the mean cosine of (B, C) unit vectors."""
  return -2.0 * jnp.mean(jnp.sum(online * target, axis=-1))


def momentum(step, total_steps: int, base: float = 0.99):
  """The target's momentum at step k of K: m0 at k = 0, rising along a cosine to 1 at k = K."""
  return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * step / total_steps) + 1.0) / 2.0


def ema(target, online, m):
  return jax.tree.map(lambda t, o: m * t + (1.0 - m) * o, target, online)


def pretrain_loss(online, target, box1, box2, weights: Dict[str, jax.Array], *,
                  pixel_loss: str = "pixpro", pos_ratio: float = 0.7, temperature: float = 0.3
                  ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """weights["pixel"] x the pixel loss (PixPro or PixContrast) + weights["instance"] x the instance
  loss, each symmetrised over the two views, for the branches the model has. online / target: the
  model's outputs for the batch [view 1; view 2] (2B rows); box1, box2: (B, 4) the views' boxes."""
  if pixel_loss not in PIXEL_LOSSES:
    raise UserError(f"unknown PixPro pixel loss '{pixel_loss}' ({', '.join(PIXEL_LOSSES)})")
  b = box1.shape[0]
  halves = lambda a: (a[:b], a[b:])
  metrics = {}
  loss = 0.0
  if "pixel" in target:
    _, h, w, c = target["pixel"].shape
    mask = positive_mask(box1, box2, h, w, pos_ratio)
    t1, t2 = halves(target["pixel"].reshape(2 * b, h * w, c))
    if pixel_loss == "pixpro":
      o1, o2 = halves(online["pixel"].reshape(2 * b, h * w, c))
      pixel = pixpro_loss(o1, t2, mask) + pixpro_loss(o2, t1, mask.transpose(0, 2, 1))
    else:
      o1, o2 = halves(online["proj"].reshape(2 * b, h * w, c))
      pixel = (pixcontrast_loss(o1, t2, mask, temperature)
               + pixcontrast_loss(o2, t1, mask.transpose(0, 2, 1), temperature))
    metrics.update(pixel_loss=pixel, positives_per_image=jnp.mean(jnp.sum(mask, (1, 2))))
    loss = loss + weights["pixel"] * pixel
  if "instance" in target:
    (o1, o2), (t1, t2) = halves(online["instance"]), halves(target["instance"])
    instance = instance_loss(o1, t2) + instance_loss(o2, t1)
    metrics["instance_loss"] = instance
    loss = loss + weights["instance"] * instance
  return loss, metrics


def make_train_step(model: PixPro, tx: optax.GradientTransformation, total_steps: int, *,
                    base_momentum: float = 0.99, **loss_kwargs) -> Callable:
  """The pre-training step (state, batch, weights) -> (state, metrics) on a batch {"view1", "view2":
  (B, H, W, 3), "box1", "box2": (B, 4)}; `weights` of `pretrain_loss`.

  The weights are arguments, not constants, so that PixPro (pixel 1, instance 0 or the paper's
  instance-branch weight) and the instance-level baseline (pixel 0, instance 1) share one compiled
  step. The state's `ema_params` are the target network's parameters (initialised equal to the online
  ones, as the official code copies them). BatchNorm runs on batch statistics in both networks; the
  target's running statistics are discarded (the official target never uses its own).
  """

  def train_step(state: TrainState, batch, weights):
    images = jnp.concatenate([batch["view1"], batch["view2"]])
    m = momentum(state.step, total_steps, base_momentum)
    target_params = ema(state.ema_params, state.params, m)
    target, _ = model.apply({"params": target_params, "batch_stats": state.batch_stats}, images,
                            train=True, method=PixPro.target, mutable=["batch_stats"])
    target = jax.lax.stop_gradient(target)

    def loss_fn(params):
      online, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, images,
                                    train=True, mutable=["batch_stats"])
      loss, metrics = pretrain_loss(online, target, batch["box1"], batch["box2"], weights, **loss_kwargs)
      return loss, (metrics, updates["batch_stats"])

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new, grad_norm = apply_gradients(state, grads, loss, tx, finish=lambda new: new.replace(
        step=state.step + 1, batch_stats=batch_stats, ema_params=target_params))
    return new, {"loss": loss, "grad_norm": grad_norm, "momentum": m, **metrics}

  return train_step


def pretrain(train_step: Callable, init: Callable[[], TrainState], batches: Callable[[int], Iterator],
             weights: Dict[str, float], config: ml_collections.ConfigDict, workdir: str, *,
             total_steps: Optional[int] = None,
             evaluate: Optional[Callable[[TrainState], Dict[str, float]]] = None,
             shardings=None, desc: str = "pretrain") -> Tuple[TrainState, Dict[str, float]]:
  """Runs `train_step` (of `make_train_step`) with `weights` on the shared step loop, from `workdir`'s
  newest checkpoint, else from `init()`, up to `total_steps` (default `config.total_steps`).

  `batches(start)` yields the batches of steps start+1, start+2, ...: each a function of the seed and
  the step, so a resumed run is the uninterrupted one. The whole state (online parameters, momentum
  target, optimizer state, batch statistics, key, step) is saved every `config.checkpoint_every` steps,
  at the end and on pre-emption; metrics go to `workdir`/metrics.jsonl. Returns the state and
  `evaluate(state)` at the end ({} without `evaluate`), also for a workdir that was already done."""
  evaluate = evaluate or (lambda state: {})
  return loop.run_in_workdir(
      workdir, init, jax.jit(train_step, donate_argnums=0), batches, config=config,
      total_steps=total_steps or config.total_steps,
      settings=dict(seed=config.seed, global_batch=config.batch_size), evaluate=evaluate,
      log_every=config.log_every, checkpoint_every=config.checkpoint_every, keep=config.keep_checkpoints,
      shardings=shardings, desc=desc, extra=({k: jnp.float32(v) for k, v in weights.items()},))
