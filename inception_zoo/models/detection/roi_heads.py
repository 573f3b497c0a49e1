"""RoI heads of Faster R-CNN and Mask R-CNN on FPN levels P2-P5.

Ren, He, Girshick, Sun. "Faster R-CNN", NeurIPS 2015 (arXiv:1506.01497), with the box head of Girshick, "Fast
R-CNN", ICCV 2015; He, Gkioxari, Dollar, Girshick. "Mask R-CNN", ICCV 2017 (arXiv:1703.06870), Section 3 (RoIAlign,
the mask branch, per-class masks with a per-pixel sigmoid); Lin et al., "Feature Pyramid Networks for Object
Detection", CVPR 2017 (arXiv:1612.03144), Section 4.2 (the level of an RoI of w x h: floor(4 + log2(sqrt(wh) /
224)) in 2..5, the two-fc 1024-d box head).

Follows torchvision's `models/detection/roi_heads.py` and the heads of `faster_rcnn.py` / `mask_rcnn.py` module
for module (`roi_heads.box_head.fc6`, `box_predictor.cls_score` / `bbox_pred`, `mask_head.<i>.0`,
`mask_predictor.conv5_mask` / `mask_fcn_logits`), so weights convert by rule. Inference: 7x7 RoIAlign (sampling
ratio 2, aligned=False) of every proposal, fc6 and fc7 (ReLU), class scores (softmax) and per-class boxes
(weights 10, 10, 5, 5) clipped to the image; candidates of the non-background classes scoring above
`score_thresh`, at least 1e-2 px wide and high, go through NMS at `nms_thresh` within each class, and the best
`detections_per_img` are kept. Mask R-CNN then pools each detection at 14x14, applies four 3x3 convolutions
(ReLU), a 2x2/2 transposed convolution (ReLU) and a 1x1 convolution to one 28x28 logit map per class, and keeps
the sigmoid of the detected class's map.

Training: the ground-truth boxes join the proposals; they match at IoU >= 0.5 (positive, the gt's class) or
below (background); per image 512 are sampled with at most a quarter positive. Cross-entropy over the sampled,
smooth L1 (beta 1/9) on the positives' deltas of their gt class summed and divided by the number sampled, and
for masks the binary cross-entropy of the positives' 28x28 logits of their gt class against the gt mask seen
through the proposal (`ops.mask_targets` from 112x112 box crops, see there).

Static shapes: the sampled RoIs fill min(batch_size_per_image, proposals + gts) slots per image (positives
first, then negatives, the rest flagged invalid), the mask branch takes the first min(int(batch_size_per_image *
positive_fraction), slots) of them, and detections are padded to `detections_per_img` with a `valid` mask.
Where torchvision infers the RoIAlign scales from the largest real image of the batch, this uses the padded
canvas (the same unless images are less than half the canvas).
"""
import math
from typing import Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo import ops
from inception_zoo.models.detection.losses import sigmoid_bce, smooth_l1, softmax_cross_entropy
from inception_zoo.models.detection.rpn import ConvStack

BOX_WEIGHTS = (10., 10., 5., 5.)  # torchvision's bbox_reg_weights for the RoI head's box coder
# PyTorch's default init of Linear weights and of Conv / Linear biases: U(+-1 / sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
# torchvision's MaskRCNNHeads / MaskRCNNPredictor weights: kaiming_normal_(mode='fan_out', nonlinearity='relu').
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_default_bias(fan_in: int):
  bound = 1 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def linear(features: int, fan_in: int, name: str) -> nn.Dense:
  """`nn.Linear(fan_in, features)` with PyTorch's initialisation."""
  return nn.Dense(features, kernel_init=torch_default_kernel, bias_init=torch_default_bias(fan_in), name=name)


class TwoMLPHead(nn.Module):
  """fc6 and fc7 with ReLU on the flattened pooled features (channel-major, as torchvision flattens NCHW, so
  fc6's weight converts by the linear rule)."""
  representation_size: int = 1024

  @nn.compact
  def __call__(self, x):
    x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
    x = nn.relu(linear(self.representation_size, x.shape[-1], "fc6")(x))
    return nn.relu(linear(self.representation_size, self.representation_size, "fc7")(x))


class FastRCNNPredictor(nn.Module):
  """Class logits (num_classes, background 0 included) and per-class box deltas (4 num_classes)."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return (linear(self.num_classes, x.shape[-1], "cls_score")(x),
            linear(4 * self.num_classes, x.shape[-1], "bbox_pred")(x))


class MaskRCNNPredictor(nn.Module):
  """2x2/2 transposed convolution + ReLU, then a 1x1 convolution to one logit map per class. The transposed
  kernel is stored (2, 2, out, in) (`transpose_kernel=True`: PyTorch's in-out order, flipped spatially by
  lax), so torchvision's (in, out, 2, 2) weight converts by the convolution rule."""
  num_classes: int
  dim_reduced: int = 256

  @nn.compact
  def __call__(self, x):
    x = nn.ConvTranspose(self.dim_reduced, (2, 2), (2, 2), padding="VALID", transpose_kernel=True,
                         kernel_init=kaiming_fan_out, bias_init=torch_default_bias(self.dim_reduced * 4),
                         name="conv5_mask")(x)
    return nn.Conv(self.num_classes, (1, 1), kernel_init=kaiming_fan_out,
                   bias_init=torch_default_bias(self.dim_reduced), name="mask_fcn_logits")(nn.relu(x))


def roi_pool(features, boxes, output_size: int, image_shape: Tuple[int, int]):
  """torchvision's MultiScaleRoIAlign (sampling ratio 2, canonical 224 px at level 4) of boxes (B, N, 4) on the
  levels `features` (B, H_l, W_l, C): (B * N, size, size, C)."""
  b, n = boxes.shape[:2]
  flat = boxes.reshape(-1, 4)
  scales = ops.infer_scales([f.shape for f in features], image_shape)
  k_min, k_max = round(-math.log2(scales[0])), round(-math.log2(scales[-1]))
  levels = ops.level_for_boxes(flat, k_min, k_max) - k_min
  return ops.multiscale_roi_align(features, flat, jnp.repeat(jnp.arange(b), n), output_size, scales=scales,
                                  sampling_ratio=2, aligned=False, levels=levels)


def postprocess_detections(class_logits, box_regression, proposals, proposal_valid, image_sizes, *,
                           score_thresh: float, nms_thresh: float, detections_per_img: int) -> Dict[str, jax.Array]:
  """torchvision's `RoIHeads.postprocess_detections` on (B, P, K) logits and (B, P, 4K) deltas: boxes (B, D, 4),
  scores (B, D), labels (B, D) in 1..K-1, valid (B, D); invalid entries are zero, the valid ones best first."""
  b, p, k = class_logits.shape
  boxes = ops.decode_boxes(box_regression.reshape(b, p, k, 4), proposals[:, :, None], BOX_WEIGHTS)
  sizes = image_sizes.astype(boxes.dtype)
  boxes = ops.clip_boxes(boxes, sizes[:, 0, None, None, None], sizes[:, 1, None, None, None])
  scores = jax.nn.softmax(class_logits, axis=-1)
  labels = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, p, k))
  # Class 0 (background) is never a detection; candidates are (proposal, class) pairs, proposal-major.
  boxes = boxes[:, :, 1:].reshape(b, -1, 4)
  scores = scores[:, :, 1:].reshape(b, -1)
  labels = labels[:, :, 1:].reshape(b, -1)
  valid = jnp.repeat(proposal_valid, k - 1, axis=1) & (scores > score_thresh) & ops.small_boxes_mask(boxes, 1e-2)
  idx, keep = jax.vmap(lambda bx, s, c, v: ops.batched_nms(bx, s, c, nms_thresh, detections_per_img, v))(
      boxes, scores, labels, valid)
  boxes = jnp.take_along_axis(boxes, idx[..., None], axis=1)
  return {"boxes": jnp.where(keep[..., None], boxes, 0.),
          "scores": jnp.where(keep, jnp.take_along_axis(scores, idx, axis=1), 0.),
          "labels": jnp.where(keep, jnp.take_along_axis(labels, idx, axis=1), 0), "valid": keep}


def select_training_samples(proposals, proposal_valid, targets, key, *, fg_iou_thresh: float,
                            bg_iou_thresh: float, batch_size_per_image: int, positive_fraction: float):
  """torchvision's `RoIHeads.select_training_samples` in static slots: the gts join the proposals, are matched
  and sampled; returns the sampled boxes (B, S, 4), labels (B, S) (0 background; -1 empty slot), the matched gt
  index (B, S) and the regression targets (B, S, 4), positives first."""
  gt_boxes, gt_labels, gt_valid = targets["boxes"], targets["labels"], targets["instance_valid"]
  boxes = jnp.concatenate([proposals, gt_boxes.astype(proposals.dtype)], axis=1)
  valid = jnp.concatenate([proposal_valid, gt_valid], axis=1)
  slots = min(batch_size_per_image, boxes.shape[1])

  def one(boxes, valid, gt_boxes, gt_labels, gt_valid, key):
    matched = ops.match(ops.box_iou(gt_boxes, boxes), gt_valid, fg_iou_thresh, bg_iou_thresh, False)
    labels = jnp.where(matched >= 0, gt_labels[jnp.maximum(matched, 0)], jnp.where(matched == -1, 0, -1))
    labels = jnp.where(valid, labels, -1)
    pos, neg = ops.sample_balanced(labels, key, batch_size_per_image, positive_fraction)
    order = jnp.argsort(-(2 * pos.astype(jnp.int32) + neg), stable=True)[:slots]
    boxes, matched, pos, sampled = boxes[order], jnp.maximum(matched[order], 0), pos[order], (pos | neg)[order]
    reg = ops.encode_boxes(gt_boxes[matched], boxes, BOX_WEIGHTS)
    # Targets are zero off the positives: a padding gt's log(0) would make the masked loss's gradient NaN.
    return boxes, jnp.where(sampled, labels[order], -1), matched, jnp.where(pos[:, None], reg, 0.)

  keys = jax.random.split(key, boxes.shape[0])
  return jax.vmap(one)(boxes, valid, gt_boxes, gt_labels.astype(jnp.int32), gt_valid, keys)


def fastrcnn_loss(class_logits, box_regression, labels, regression_targets) -> Dict[str, jax.Array]:
  """torchvision's `fastrcnn_loss` over the sampled slots (labels >= 0)."""
  sampled = labels >= 0
  count = jnp.maximum(jnp.sum(sampled), 1)
  ce = softmax_cross_entropy(class_logits, jnp.maximum(labels, 0))
  k = class_logits.shape[-1]
  deltas = box_regression.reshape(*labels.shape, k, 4)
  deltas = jnp.take_along_axis(deltas, jnp.maximum(labels, 0)[..., None, None], axis=-2)[..., 0, :]
  box = jnp.where((labels > 0)[..., None], smooth_l1(deltas - regression_targets, 1 / 9), 0.)
  return {"loss_classifier": jnp.sum(jnp.where(sampled, ce, 0.)) / count, "loss_box_reg": jnp.sum(box) / count}


def class_maps(mask_logits, labels):
  """(..., M, M, K) logits -> (..., M, M): the map of each RoI's class."""
  return jnp.take_along_axis(mask_logits, labels[..., None, None, None], axis=-1)[..., 0]


class RoIHeads(nn.Module):
  """torchvision's `RoIHeads` with its box and (with `masks`) mask branches; fields are its arguments.
  `paste_masks=False` leaves out the full-canvas masks (B, D, H, W), which take H W / 784 times the
  memory of the 28x28 `mask_probs`."""
  num_classes: int
  representation_size: int = 1024
  fg_iou_thresh: float = 0.5
  bg_iou_thresh: float = 0.5
  batch_size_per_image: int = 512
  positive_fraction: float = 0.25
  score_thresh: float = 0.05
  nms_thresh: float = 0.5
  detections_per_img: int = 100
  masks: bool = False
  mask_layers: Tuple[int, ...] = (256, 256, 256, 256)
  mask_dim_reduced: int = 256
  paste_masks: bool = True

  @nn.compact
  def __call__(self, features, proposals, proposal_valid, image_sizes, image_shape: Tuple[int, int], *,
               train: bool, targets=None):
    """`features`: P2..P5 (B, H_l, W_l, C); proposals (B, P, 4) with proposal_valid (B, P); image_sizes (B, 2)
    real (height, width) to clip to; image_shape the canvas. Returns the detections (inference) or the losses."""
    box_head = TwoMLPHead(self.representation_size, name="box_head")
    box_predictor = FastRCNNPredictor(self.num_classes, name="box_predictor")

    def boxes_forward(boxes):
      b, n = boxes.shape[:2]
      logits, deltas = box_predictor(box_head(roi_pool(features, boxes, 7, image_shape)))
      return logits.reshape(b, n, -1), deltas.reshape(b, n, -1)

    def masks_forward(boxes, labels):
      x = roi_pool(features, boxes, 14, image_shape)
      x = ConvStack(self.mask_layers, kaiming_fan_out, name="mask_head")(x)
      logits = MaskRCNNPredictor(self.num_classes, self.mask_dim_reduced, name="mask_predictor")(x)
      return class_maps(logits.reshape(*boxes.shape[:2], *logits.shape[1:]), labels)

    if not train:
      class_logits, box_regression = boxes_forward(proposals)
      out = postprocess_detections(class_logits, box_regression, proposals, proposal_valid, image_sizes,
                                   score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                                   detections_per_img=self.detections_per_img)
      if self.masks:
        probs = jnp.where(out["valid"][..., None, None], nn.sigmoid(masks_forward(out["boxes"], out["labels"])), 0.)
        out["mask_probs"] = probs
        if self.paste_masks:
          b, d, m = probs.shape[:3]
          out["masks"] = ops.paste_masks(probs.reshape(-1, m, m), out["boxes"].reshape(-1, 4),
                                         *image_shape).reshape(b, d, *image_shape)
      return out

    boxes, labels, matched, regression_targets = select_training_samples(
        proposals, proposal_valid, targets, self.make_rng("sampling"), fg_iou_thresh=self.fg_iou_thresh,
        bg_iou_thresh=self.bg_iou_thresh, batch_size_per_image=self.batch_size_per_image,
        positive_fraction=self.positive_fraction)
    losses = fastrcnn_loss(*boxes_forward(boxes), labels, regression_targets)
    if self.masks:
      # The positives lead the slots, and there are at most int(batch_size_per_image * positive_fraction).
      n = min(int(self.batch_size_per_image * self.positive_fraction), boxes.shape[1])
      boxes, labels, matched = boxes[:, :n], labels[:, :n], matched[:, :n]
      positive = labels > 0
      logits = masks_forward(boxes, jnp.maximum(labels, 0))
      size = logits.shape[-1]
      mask_targets = jax.vmap(lambda c, g, m, p: ops.mask_targets(c, g, m, p, size))(
          targets["masks"], targets["boxes"], matched, boxes)
      mask_targets = jnp.where(positive[..., None, None], mask_targets, 0.)  # padding gts' crops can be NaN
      bce = jnp.where(positive[..., None, None], sigmoid_bce(logits, mask_targets), 0.)
      losses["loss_mask"] = jnp.sum(bce) / jnp.maximum(jnp.sum(positive) * size * size, 1)
    return losses
