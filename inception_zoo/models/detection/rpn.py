"""Region Proposal Network on a feature pyramid.

Ren, He, Girshick, Sun. "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks",
NeurIPS 2015 (arXiv:1506.01497), Section 3.1; on the FPN levels as Lin, Dollar, Girshick, He, Hariharan,
Belongie, "Feature Pyramid Networks for Object Detection", CVPR 2017 (arXiv:1612.03144), Section 4.1: one head
shared by P2..P6, anchors of one size per level (32..512 px) at aspect ratios 1:2, 1:1, 2:1.

Follows torchvision's `models/detection/rpn.py` and `anchor_utils.py` module for module, so its weights convert
by rule (`rpn.head.conv.0.0.weight` <-> `rpn/head/conv/layers_0/layers_0/kernel`). Head: 3x3 convolution + ReLU,
1x1 objectness logits (A per location) and 1x1 box deltas (4A), weights N(0, 0.01) and biases 0. Proposals: per
level the `pre_nms_top_n` highest logits, their boxes decoded and clipped to the image, boxes under 1e-3 px and
objectness under `score_thresh` dropped, NMS at `nms_thresh` within each level, then the `post_nms_top_n` best
over all levels. Where torchvision returns a variable number of boxes this returns a fixed number with a validity
mask; proposals carry no gradient (torchvision's `.detach()`).

Training (Section 3.1.2): anchors match a ground-truth box at IoU >= 0.7 (positive) or < 0.3 (negative), and
every box also takes its best anchors; per image 256 anchors are sampled, at most half positive; the loss is
binary cross-entropy on the sampled anchors (their mean) and smooth L1 (beta 1/9) on the positives' deltas,
summed and divided by the number sampled, over the whole batch.
"""
from typing import Callable, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo import ops
from inception_zoo.errors import UserError
from inception_zoo.models.detection.losses import sigmoid_bce, smooth_l1

ANCHOR_SIZES = ((32,), (64,), (128,), (256,), (512,))  # pixels, one tuple per level P2..P6
ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width


class ConvBlock(nn.Module):
  """torchvision's `Conv2dNormActivation(norm_layer=None)`: a biased 3x3 convolution (its `0`), then ReLU."""
  features: int
  kernel_init: Callable

  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=self.kernel_init,
                           bias_init=nn.initializers.zeros, name="layers_0")(x))


class ConvStack(nn.Module):
  """A torchvision `nn.Sequential` of `ConvBlock`s (keys `<i>.0.weight`): the RPN's, mask and RetinaNet heads."""
  features: Tuple[int, ...]
  kernel_init: Callable

  @nn.compact
  def __call__(self, x):
    for i, features in enumerate(self.features):
      x = ConvBlock(features, self.kernel_init, name=f"layers_{i}")(x)
    return x


class RPNHead(nn.Module):
  """Objectness logits and box deltas of every anchor; the same weights on every level."""
  num_anchors: int
  conv_depth: int = 1

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]):
    """[(B, H_l, W_l, C)] -> ([logits (B, H_l W_l A)], [deltas (B, H_l W_l A, 4)]) in the anchors' order."""
    init = nn.initializers.normal(0.01)
    conv = ConvStack((features[0].shape[-1],) * self.conv_depth, init, name="conv")
    cls_logits = nn.Conv(self.num_anchors, (1, 1), kernel_init=init, name="cls_logits")
    bbox_pred = nn.Conv(4 * self.num_anchors, (1, 1), kernel_init=init, name="bbox_pred")
    logits, deltas = [], []
    for x in features:
      t = conv(x)
      # NHWC channel a (logits) and 4a + k (deltas) flatten to torchvision's (y, x, anchor) order.
      logits.append(cls_logits(t).reshape(x.shape[0], -1))
      deltas.append(bbox_pred(t).reshape(x.shape[0], -1, 4))
    return logits, deltas


def level_anchors(features: Sequence[jax.Array], image_shape: Tuple[int, int], sizes, aspect_ratios):
  """torchvision's AnchorGenerator: each level's anchors, strided by the canvas size over the map size."""
  return [ops.anchors(x.shape[1:3], (image_shape[0] // x.shape[1], image_shape[1] // x.shape[2]), size,
                      aspect_ratios) for x, size in zip(features, sizes)]


def filter_proposals(logits, deltas, anchors, image_sizes, *, pre_nms_top_n: int, post_nms_top_n: int,
                     nms_thresh: float, score_thresh: float, min_size: float):
  """torchvision's `RegionProposalNetwork.filter_proposals` with static shapes, per level lists as `RPNHead`
  returns them: (proposals (B, P, 4), valid (B, P)), P = min(post_nms_top_n, candidates), best first."""
  boxes, scores, levels = [], [], []
  for level, (lg, dl, an) in enumerate(zip(logits, deltas, anchors)):
    top, idx = jax.lax.top_k(lg, min(pre_nms_top_n, lg.shape[1]))
    boxes.append(ops.decode_boxes(jnp.take_along_axis(dl, idx[..., None], axis=1), an[idx]))
    scores.append(top)
    levels.append(jnp.full(idx.shape[1:], level, jnp.int32))
  boxes, levels = jnp.concatenate(boxes, 1), jnp.concatenate(levels)
  scores = jax.nn.sigmoid(jnp.concatenate(scores, 1))
  sizes = image_sizes.astype(boxes.dtype)
  boxes = ops.clip_boxes(boxes, sizes[:, 0, None, None], sizes[:, 1, None, None])
  valid = ops.small_boxes_mask(boxes, min_size) & (scores >= score_thresh)
  count = min(post_nms_top_n, boxes.shape[1])
  idx, keep = jax.vmap(lambda b, s, v: ops.batched_nms(b, s, levels, nms_thresh, count, v))(boxes, scores, valid)
  proposals = jnp.where(keep[..., None], jnp.take_along_axis(boxes, idx[..., None], axis=1), 0.)
  return jax.lax.stop_gradient(proposals), keep


def rpn_loss(logits, deltas, anchors, targets, key, *, fg_iou_thresh: float, bg_iou_thresh: float,
             batch_size_per_image: int, positive_fraction: float) -> Dict[str, jax.Array]:
  """torchvision's `assign_targets_to_anchors` + `compute_loss` on all levels' logits (B, N), deltas (B, N, 4)
  and anchors (N, 4): {'loss_objectness', 'loss_rpn_box_reg'}."""

  def assign(gt_boxes, gt_valid, key):
    matched = ops.match(ops.box_iou(gt_boxes, anchors), gt_valid, fg_iou_thresh, bg_iou_thresh, True)
    labels = jnp.where(matched >= 0, 1, jnp.where(matched == -1, 0, -1))
    pos, neg = ops.sample_balanced(labels, key, batch_size_per_image, positive_fraction)
    reg = ops.encode_boxes(gt_boxes[jnp.maximum(matched, 0)], anchors)
    # Zero targets off the positives: a padding gt's log(0) would turn the masked loss's gradient into NaN.
    return pos, pos | neg, jnp.where(pos[:, None], reg, 0.)

  keys = jax.random.split(key, logits.shape[0])
  pos, sampled, reg = jax.vmap(assign)(targets["boxes"], targets["instance_valid"], keys)
  count = jnp.maximum(jnp.sum(sampled), 1)
  objectness = jnp.sum(jnp.where(sampled, sigmoid_bce(logits, pos.astype(logits.dtype)), 0.)) / count
  box = jnp.sum(jnp.where(pos[..., None], smooth_l1(deltas - reg, 1 / 9), 0.)) / count
  return {"loss_objectness": objectness, "loss_rpn_box_reg": box}


class RegionProposalNetwork(nn.Module):
  """torchvision's `RegionProposalNetwork` with its `AnchorGenerator`; fields are its arguments."""
  anchor_sizes: Tuple[Tuple[float, ...], ...] = ANCHOR_SIZES
  aspect_ratios: Tuple[float, ...] = ASPECT_RATIOS
  pre_nms_top_n_train: int = 2000
  pre_nms_top_n_test: int = 1000
  post_nms_top_n_train: int = 2000
  post_nms_top_n_test: int = 1000
  nms_thresh: float = 0.7
  fg_iou_thresh: float = 0.7
  bg_iou_thresh: float = 0.3
  batch_size_per_image: int = 256
  positive_fraction: float = 0.5
  score_thresh: float = 0.0

  min_size = 1e-3  # proposals narrower or lower than this are dropped (fixed in torchvision too)

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], image_sizes, image_shape: Tuple[int, int], *, train: bool,
               targets=None):
    """`features`: the pyramid (B, H_l, W_l, C), fine to coarse; `image_sizes` (B, 2) each image's real
    (height, width), which proposals are clipped to; `image_shape` the padded canvas the anchors tile.
    Returns (proposals (B, P, 4), proposal_valid (B, P), losses), losses empty unless `train`."""
    if len(features) != len(self.anchor_sizes):
      raise UserError(f"the RPN has anchor sizes for {len(self.anchor_sizes)} levels but got "
                      f"{len(features)} feature maps")
    logits, deltas = RPNHead(len(self.anchor_sizes[0]) * len(self.aspect_ratios), name="head")(features)
    anchors = level_anchors(features, image_shape, self.anchor_sizes, self.aspect_ratios)
    proposals, valid = filter_proposals(
        logits, deltas, anchors, image_sizes,
        pre_nms_top_n=self.pre_nms_top_n_train if train else self.pre_nms_top_n_test,
        post_nms_top_n=self.post_nms_top_n_train if train else self.post_nms_top_n_test,
        nms_thresh=self.nms_thresh, score_thresh=self.score_thresh, min_size=self.min_size)
    if not train:
      return proposals, valid, {}
    losses = rpn_loss(jnp.concatenate(logits, 1), jnp.concatenate(deltas, 1), jnp.concatenate(anchors), targets,
                      self.make_rng("sampling"), fg_iou_thresh=self.fg_iou_thresh, bg_iou_thresh=self.bg_iou_thresh,
                      batch_size_per_image=self.batch_size_per_image, positive_fraction=self.positive_fraction)
    return proposals, valid, losses
