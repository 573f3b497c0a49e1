"""RetinaNet on a ResNet-50-FPN (Lin, Goyal, Girshick, He, Dollar, "Focal Loss for Dense Object Detection",
ICCV 2017, arXiv:1708.02002).

Follows torchvision's `models/detection/retinanet.py` (`retinanet_resnet50_fpn`, v1: no GroupNorm in the head)
module for module, so its weights convert by rule: the backbone is `resnet_fpn_backbone` on C3..C5 with P6/P7
from P5 (`LastLevelP6P7(256, 256)`); the head shares its convolutions across the five levels, 4 x (conv3x3 +
ReLU) then a conv3x3 to A*K class logits (`head/classification_head`) and the same tower to A*4 box deltas
(`head/regression_head`); A = 9 anchors per location (3 sizes x 3 aspect ratios per level).

Classes follow torchvision exactly: the classifier has `num_classes` sigmoid outputs and a gt label indexes them
directly, so slot 0 (COCO's background) is a class like the others that no gt uses, and detections may carry
label 0. Images come in already normalised (torchvision's transform normalises inside the model) and are not
resized; boxes are clipped to the batch's array size, so images padded into one batch clip to the padded size.

Inference (`postprocess_detections`) per image and level: sigmoid scores over (anchor, class), the best
`topk_candidates`, those above `score_thresh` valid, decoded (BoxCoder weights 1) and clipped; then class-wise
NMS over all levels, `detections_per_img` kept. Shapes are static: outputs are padded, with a `valid` mask.
Training: Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True); sigmoid focal loss (alpha 0.25,
gamma 2) over the anchors not between the thresholds, and L1 on the encoded boxes of the foreground anchors, each
divided by max(1, number of foreground anchors) per image and averaged over the batch.
"""
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers.common import check_image
from inception_zoo.models.detection.fpn import resnet_fpn_backbone
from inception_zoo.ops import boxes as box_ops
from inception_zoo.ops.nms import batched_nms
from inception_zoo.registry import register_model

# torchvision's `_default_anchorgen`: 3 sizes an octave-third apart per level (P3..P7), 3 aspect ratios.
ANCHOR_SIZES = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in (32, 64, 128, 256, 512))
ASPECT_RATIOS = (0.5, 1.0, 2.0)
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


def head_conv(features: int, name: str, bias: float = 0.0):
  """conv3x3 (padding 1) with torchvision's head init: weights N(0, 0.01), constant bias."""
  return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=nn.initializers.normal(0.01),
                 bias_init=nn.initializers.constant(bias), name=name)


class RetinaNetSubHead(nn.Module):
  """4 x (conv3x3 + ReLU) and a conv3x3 to A * `outputs` channels, applied with shared weights to every
  level; returns (B, sum of H*W*A, outputs) in torchvision's order (location, then anchor)."""
  num_anchors: int
  outputs: int
  out_name: str  # 'cls_logits' | 'bbox_reg'
  out_bias: float = 0.0

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]) -> jnp.ndarray:
    tower = [head_conv(features[0].shape[-1], f"conv_{i}") for i in range(4)]
    out = head_conv(self.num_anchors * self.outputs, self.out_name, self.out_bias)
    results = []
    for x in features:
      for conv in tower:
        x = nn.relu(conv(x))
      x = out(x)
      results.append(x.reshape(x.shape[0], -1, self.outputs))  # (B, H, W, A*K) -> (B, HWA, K)
    return jnp.concatenate(results, axis=1)


class RetinaNetHead(nn.Module):
  """torchvision's RetinaNetHead (v1): class logits (B, N, K) and box deltas (B, N, 4) over all N anchors."""
  num_anchors: int
  num_classes: int
  prior_probability: float = 0.01  # initial foreground probability of every logit (Sections 3.3, 4.1)

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]) -> Dict[str, jnp.ndarray]:
    prior = -math.log((1 - self.prior_probability) / self.prior_probability)
    return {"cls_logits": RetinaNetSubHead(self.num_anchors, self.num_classes, "cls_logits", prior,
                                           name="classification_head")(features),
            "bbox_regression": RetinaNetSubHead(self.num_anchors, 4, "bbox_reg", name="regression_head")(features)}


def sigmoid_focal_loss(logits, targets, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA):
  """torchvision.ops.sigmoid_focal_loss, reduction 'none' (Lin et al., eq. 5)."""
  p = jax.nn.sigmoid(logits)
  ce = jax.nn.softplus(logits) - logits * targets  # binary cross-entropy with logits
  p_t = p * targets + (1 - p) * (1 - targets)
  alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
  return alpha_t * ce * (1 - p_t) ** gamma


class RetinaNet(nn.Module):
  """RetinaNet (torchvision's `retinanet_resnet50_fpn`).

  `apply(variables, images (B, H, W, 3), train=False)` -> padded detections {'boxes' (B, D, 4) x1y1x2y2 pixels,
  'scores' (B, D), 'labels' (B, D) int32, 'valid' (B, D) bool}, D = detections_per_img, in decreasing score order.
  `apply(variables, images, targets={'boxes' (B, M, 4), 'labels' (B, M) int, 'instance_valid' (B, M) bool},
  train=True)` -> {'classification', 'bbox_regression'} losses. `method=RetinaNet.head_outputs` gives the raw
  head outputs with their anchors.
  """
  num_classes: int = 91  # classifier outputs, torchvision's count (slot 0 included, see the module docstring)
  body: str = "resnet50"  # a registered classifier with C3..C5 features (a ResNet)
  body_options: Optional[Dict[str, Any]] = None  # options of the ResNet body (e.g. tiny widths for tests)
  fpn_channels: int = 256
  frozen_bn: bool = True  # torchvision's FrozenBatchNorm2d in the body
  anchor_sizes: Tuple[Tuple[int, ...], ...] = ANCHOR_SIZES  # per level, P3..P7
  aspect_ratios: Tuple[float, ...] = ASPECT_RATIOS  # height / width, the same at every level
  score_thresh: float = 0.05
  nms_thresh: float = 0.5
  detections_per_img: int = 300
  fg_iou_thresh: float = 0.5
  bg_iou_thresh: float = 0.4
  topk_candidates: int = 1000  # per level, before NMS

  min_size = 32  # the body's: C5 at least one pixel
  tiny_options = {"body_options": {"layers": (1, 1, 1, 1), "channels": (16, 32, 64, 128), "stem_width": 16},
                  "fpn_channels": 32}

  def setup(self):
    if len(self.anchor_sizes) != 5:
      raise UserError(f"retinanet has 5 pyramid levels (P3..P7); got {len(self.anchor_sizes)} anchor sizes")
    if any(len(s) != len(self.anchor_sizes[0]) for s in self.anchor_sizes):
      raise UserError(f"retinanet shares its head across levels, so every level needs the same number of "
                      f"anchor sizes; got {self.anchor_sizes}")
    # Built in setup so the modules are named by attribute (`backbone/body`, `backbone/fpn`, `head`).
    self.backbone = resnet_fpn_backbone(self.body, extra="p6p7", levels=("C3", "C4", "C5"),
                                        frozen_bn=self.frozen_bn, out_channels=self.fpn_channels,
                                        **(self.body_options or {}))
    num_anchors = len(self.anchor_sizes[0]) * len(self.aspect_ratios)
    self.head = RetinaNetHead(num_anchors, self.num_classes)

  def head_outputs(self, images, *, train: bool = False) -> Dict[str, Any]:
    """{'cls_logits' (B, N, K), 'bbox_regression' (B, N, 4), 'anchors': [(N_l, 4) per level]}: torchvision's
    head outputs over all N anchors (level by level), and the anchors, the same for every image of the batch."""
    check_image(images, "retinanet", self.min_size)
    features = self.backbone(images, train=train)
    anchors = []
    for feature, sizes in zip(features, self.anchor_sizes):
      h, w = feature.shape[1:3]
      # AnchorGenerator's stride: the (padded) image size over the feature size, floored.
      stride = (images.shape[1] // h, images.shape[2] // w)
      anchors.append(box_ops.anchors((h, w), stride, sizes, self.aspect_ratios))
    return {**self.head(features), "anchors": anchors}

  def __call__(self, images, targets: Optional[Dict[str, jnp.ndarray]] = None, *, train: bool = False,
               image_sizes=None):
    """Detections or, with `train=True`, the losses; `image_sizes` (B, 2): each image's (h, w) inside the padded
    batch, where its boxes are clipped (default: the whole canvas)."""
    out = self.head_outputs(images, train=train)
    if train:
      if targets is None:
        raise UserError("retinanet needs targets (boxes, labels, instance_valid) to compute training losses")
      anchors = jnp.concatenate(out["anchors"])
      losses = jax.vmap(lambda *a: self.image_losses(*a, anchors))(
          out["cls_logits"], out["bbox_regression"], targets["boxes"], targets["labels"], targets["instance_valid"])
      return {k: jnp.mean(v) for k, v in losses.items()}
    if image_sizes is None:
      image_sizes = jnp.broadcast_to(jnp.asarray(images.shape[1:3], jnp.int32), (images.shape[0], 2))
    return jax.vmap(lambda logits, deltas, size: self.postprocess_detections(logits, deltas, out["anchors"], size))(
        out["cls_logits"], out["bbox_regression"], image_sizes)

  def image_losses(self, cls_logits, deltas, gt_boxes, gt_labels, gt_valid, anchors):
    """One image's torchvision losses, each already divided by max(1, foreground anchors)."""
    matched = box_ops.match(box_ops.box_iou(gt_boxes, anchors), gt_valid, self.fg_iou_thresh, self.bg_iou_thresh,
                            allow_low_quality=True)
    foreground = matched >= 0
    num_foreground = jnp.maximum(1, jnp.sum(foreground))
    gt = jnp.maximum(matched, 0)  # any gt for the others: their terms are masked below
    cls_target = jax.nn.one_hot(gt_labels[gt], self.num_classes) * foreground[:, None]
    counted = (matched != -2)[:, None]  # anchors between the IoU thresholds are ignored
    cls_loss = jnp.sum(jnp.where(counted, sigmoid_focal_loss(cls_logits, cls_target), 0.0))
    box_target = box_ops.encode_boxes(gt_boxes[gt], anchors)
    # where before abs: a padding gt's degenerate target is infinite, and must not reach the gradient as NaN.
    box_loss = jnp.sum(jnp.abs(jnp.where(foreground[:, None], deltas - box_target, 0.0)))
    return {"classification": cls_loss / num_foreground, "bbox_regression": box_loss / num_foreground}

  def postprocess_detections(self, cls_logits, deltas, anchors: Sequence[jnp.ndarray],
                             image_shape) -> Dict[str, jnp.ndarray]:
    """One image's detections from its head outputs and per-level anchors (torchvision's
    `postprocess_detections`)."""
    boxes, scores, labels, valid = [], [], [], []
    start = 0
    for level_anchors in anchors:
      level = slice(start, start + level_anchors.shape[0])
      start = level.stop
      level_scores = jax.nn.sigmoid(cls_logits[level]).reshape(-1)
      # torchvision keeps score > thresh, then the top k of those: the same set as the top k masked by the threshold.
      top_scores, top = jax.lax.top_k(level_scores, min(self.topk_candidates, level_scores.shape[0]))
      anchor_idx = top // self.num_classes
      decoded = box_ops.decode_boxes(deltas[level][anchor_idx], level_anchors[anchor_idx])
      boxes.append(box_ops.clip_boxes(decoded, *image_shape))
      scores.append(top_scores)
      labels.append((top % self.num_classes).astype(jnp.int32))
      valid.append(top_scores > self.score_thresh)
    boxes, scores, labels, valid = (jnp.concatenate(x) for x in (boxes, scores, labels, valid))
    keep, kept = batched_nms(boxes, scores, labels, self.nms_thresh, self.detections_per_img, valid=valid)
    return {"boxes": jnp.where(kept[:, None], boxes[keep], 0.0), "scores": jnp.where(kept, scores[keep], 0.0),
            "labels": jnp.where(kept, labels[keep], 0), "valid": kept}


@register_model(tags=("detection",))
def retinanet_resnet50_fpn(**kwargs) -> RetinaNet:
  """RetinaNet, ResNet-50-FPN, torchvision's v1: 34,068,119 parameters with 91 classes (torchvision counts
  34,014,999: its FrozenBatchNorm2d keeps the 53,120 BatchNorm scales and shifts as buffers)."""
  return RetinaNet(**kwargs)
