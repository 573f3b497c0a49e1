"""Faster R-CNN and Mask R-CNN with a ResNet-50-FPN backbone.

Ren, He, Girshick, Sun. "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks",
NeurIPS 2015 (arXiv:1506.01497); He, Gkioxari, Dollar, Girshick. "Mask R-CNN", ICCV 2017 (arXiv:1703.06870);
Lin, Dollar, Girshick, He, Hariharan, Belongie. "Feature Pyramid Networks for Object Detection", CVPR 2017
(arXiv:1612.03144). Follows torchvision's `models/detection/faster_rcnn.py`, `mask_rcnn.py` and
`generalized_rcnn.py`: backbone (ResNet body with frozen BatchNorm, FPN to P2..P6) -> RPN (`rpn.py`) -> RoI heads
(`roi_heads.py`), with torchvision's defaults and its module names, so `inception_zoo.convert --torchvision`
loads `fasterrcnn_resnet50_fpn` / `maskrcnn_resnet50_fpn` weights by rule.

No resizing or normalisation inside: images come normalised, padded to one canvas whose sides are multiples of
32 (torchvision's `size_divisible`); `image_sizes` (B, 2) gives each image's real (height, width) for clipping
(default: the canvas). `model.apply(variables, images)` returns padded detections: `boxes` (B, D, 4) x1y1x2y2 in
input pixels, `scores`, `labels` (int32, 1..num_classes-1), `valid`, the RPN's `proposals` (B, P, 4) and
`proposal_valid`, and for Mask R-CNN `mask_probs` (B, D, 28, 28) (the sigmoid of the detected class's map) and
`masks` (B, D, H, W), those pasted onto the canvas as torchvision's `paste_masks_in_image` does, probabilities
to threshold (0.5 in torchvision's evaluation); `paste_masks=False` skips them where D H W floats do not fit.
`proposals=` (with `proposal_valid=`) replaces the RPN's: the RPN does not run (nor, in training, its losses).
Training, `model.apply(variables, images,
targets=..., train=True, rngs={'sampling': key})` returns torchvision's losses; targets are padded per image:
`boxes` (B, M, 4), `labels` (B, M) in 1..num_classes-1, `instance_valid` (B, M) and for Mask R-CNN `masks`
(B, M, S, S), each instance's mask cropped to its box (`ops.crop_masks`, S = 112). `check_targets` checks their
values on the host, which the jitted model cannot.
"""
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.layers import check_image
from inception_zoo.models.detection.fpn import resnet_fpn_backbone
from inception_zoo.models.detection.roi_heads import RoIHeads
from inception_zoo.models.detection.rpn import RegionProposalNetwork
from inception_zoo.models.resnet import MIN_SIZE
from inception_zoo.registry import register_model

SIZE_DIVISIBLE = 32  # the stride of C5: a canvas side that is a multiple keeps every level's grid aligned


def check_target_shapes(targets: Dict[str, Any], masks: bool, batch: Optional[int] = None,
                        model: str = "the detector"):
  """One-line UserError for missing target keys or shapes that disagree (traced arrays too)."""
  required = ("boxes", "labels", "instance_valid") + (("masks",) if masks else ())
  missing = [k for k in required if k not in targets]
  if missing:
    raise UserError(f"{model} targets need {', '.join(required)}; missing {', '.join(missing)}")
  boxes, labels, valid = (np.shape(targets[k]) for k in ("boxes", "labels", "instance_valid"))
  batch = boxes[0] if batch is None and boxes else batch
  if len(boxes) != 3 or boxes[0] != batch or boxes[-1] != 4 or labels != boxes[:2] or valid != labels:
    raise UserError(f"{model} targets must be boxes ({batch}, M, 4), labels and instance_valid ({batch}, M); got "
                    f"shapes {boxes}, {labels}, {valid}")
  if masks and (len(np.shape(targets["masks"])) != 4 or np.shape(targets["masks"])[:2] != labels):
    raise UserError(f"{model} target masks must be ({batch}, M, S, S) box crops; got shape "
                    f"{np.shape(targets['masks'])}")


def check_targets(targets: Dict[str, Any], num_classes: int, masks: bool = False):
  """Host-side check of padded training targets, for what the jitted model cannot see: one-line UserError for
  missing keys, disagreeing shapes, a valid instance's class outside 1..num_classes-1 or a box with no area."""
  check_target_shapes(targets, masks)
  boxes, labels = np.asarray(targets["boxes"]), np.asarray(targets["labels"])
  valid = np.asarray(targets["instance_valid"]).astype(bool)
  bad = valid & ((labels < 1) | (labels >= num_classes))
  if bad.any():
    b, m = np.argwhere(bad)[0]
    raise UserError(f"target class id {labels[b, m]} (image {b}, instance {m}) is outside 1..{num_classes - 1} "
                    f"(num_classes={num_classes}; 0 is the background)")
  flat = valid & ((boxes[..., 2] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 1]))
  if flat.any():
    b, m = np.argwhere(flat)[0]
    raise UserError(f"target box {boxes[b, m].tolist()} (image {b}, instance {m}) has no area (x1, y1, x2, y2)")


class FasterRCNN(nn.Module):
  """Faster R-CNN on a ResNet-FPN; the `rpn_*` and `box_*` fields are torchvision's arguments of those names."""
  num_classes: int = 91  # COCO's 90 category ids + background, as torchvision
  body: str = "resnet50"  # a registered ResNet
  body_options: Optional[Dict[str, Any]] = None  # options of the ResNet (e.g. the tiny widths)
  frozen_bn: bool = True  # the body's BatchNorm uses its running statistics, in training too
  fpn_channels: int = 256
  representation_size: int = 1024  # width of fc6 and fc7
  rpn_pre_nms_top_n_train: int = 2000
  rpn_pre_nms_top_n_test: int = 1000
  rpn_post_nms_top_n_train: int = 2000
  rpn_post_nms_top_n_test: int = 1000
  rpn_nms_thresh: float = 0.7
  rpn_fg_iou_thresh: float = 0.7
  rpn_bg_iou_thresh: float = 0.3
  rpn_batch_size_per_image: int = 256
  rpn_positive_fraction: float = 0.5
  rpn_score_thresh: float = 0.0
  box_score_thresh: float = 0.05
  box_nms_thresh: float = 0.5
  box_detections_per_img: int = 100
  box_fg_iou_thresh: float = 0.5
  box_bg_iou_thresh: float = 0.5
  box_batch_size_per_image: int = 512
  box_positive_fraction: float = 0.25

  min_size = MIN_SIZE
  has_masks = False
  # A quarter-width ResNet with one block per stage, narrow heads and few proposals: the same code paths as the
  # full model, compiled in seconds.
  tiny_options = {"body_options": {"layers": (1, 1, 1, 1), "channels": (16, 32, 64, 128), "stem_width": 16},
                  "fpn_channels": 16, "representation_size": 32, "rpn_pre_nms_top_n_train": 64,
                  "rpn_pre_nms_top_n_test": 64, "rpn_post_nms_top_n_train": 32, "rpn_post_nms_top_n_test": 32,
                  "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 32, "box_detections_per_img": 10}

  def mask_options(self) -> Dict[str, Any]:
    """The RoI heads' mask-branch arguments: none."""
    return {}

  def setup(self):
    self.backbone = resnet_fpn_backbone(self.body, frozen_bn=self.frozen_bn, out_channels=self.fpn_channels,
                                        **(self.body_options or {}))
    self.rpn = RegionProposalNetwork(
        pre_nms_top_n_train=self.rpn_pre_nms_top_n_train, pre_nms_top_n_test=self.rpn_pre_nms_top_n_test,
        post_nms_top_n_train=self.rpn_post_nms_top_n_train, post_nms_top_n_test=self.rpn_post_nms_top_n_test,
        nms_thresh=self.rpn_nms_thresh, fg_iou_thresh=self.rpn_fg_iou_thresh, bg_iou_thresh=self.rpn_bg_iou_thresh,
        batch_size_per_image=self.rpn_batch_size_per_image, positive_fraction=self.rpn_positive_fraction,
        score_thresh=self.rpn_score_thresh)
    self.roi_heads = RoIHeads(
        self.num_classes, self.representation_size, fg_iou_thresh=self.box_fg_iou_thresh,
        bg_iou_thresh=self.box_bg_iou_thresh, batch_size_per_image=self.box_batch_size_per_image,
        positive_fraction=self.box_positive_fraction, score_thresh=self.box_score_thresh,
        nms_thresh=self.box_nms_thresh, detections_per_img=self.box_detections_per_img, **self.mask_options())

  def __call__(self, images, *, train: bool = False, targets: Optional[Dict[str, Any]] = None, image_sizes=None,
               proposals=None, proposal_valid=None):
    """Detections (see the module docstring) or, with `train=True`, the dict of losses."""
    model = type(self).__name__
    check_image(images, model, self.min_size, channels=3)
    b, h, w = images.shape[:3]
    if h % SIZE_DIVISIBLE or w % SIZE_DIVISIBLE:
      raise UserError(f"{model} needs images padded to multiples of {SIZE_DIVISIBLE} pixels (torchvision's "
                      f"size_divisible); got {h}x{w}")
    if train:
      if targets is None:
        raise UserError(f"{model} needs targets in training")
      check_target_shapes(targets, self.has_masks, b, model)
    if image_sizes is None:
      image_sizes = jnp.broadcast_to(jnp.asarray([h, w], jnp.int32), (b, 2))
    features = self.backbone(images.astype(jnp.float32), train=train)
    losses = {}
    if proposals is None:
      proposals, proposal_valid, losses = self.rpn(features, image_sizes, (h, w), train=train, targets=targets)
    elif proposal_valid is None:
      proposal_valid = jnp.ones(proposals.shape[:2], bool)
    # The RoI heads pool P2..P5; P6 only carries the largest anchors.
    out = self.roi_heads(features[:4], proposals, proposal_valid, image_sizes, (h, w), train=train,
                         targets=targets)
    if train:
      return {**losses, **out}
    return {**out, "proposals": proposals, "proposal_valid": proposal_valid}


class MaskRCNN(FasterRCNN):
  """Faster R-CNN with the mask branch (`mask_layers` 3x3 convolutions, a transposed one to `mask_dim_reduced`)."""
  mask_layers: Tuple[int, ...] = (256, 256, 256, 256)
  mask_dim_reduced: int = 256
  paste_masks: bool = True  # also return `masks` (B, D, H, W) on the canvas, besides the 28x28 `mask_probs`

  has_masks = True
  tiny_options = {**FasterRCNN.tiny_options, "mask_layers": (16, 16), "mask_dim_reduced": 16}

  def mask_options(self) -> Dict[str, Any]:
    return {"masks": True, "mask_layers": self.mask_layers, "mask_dim_reduced": self.mask_dim_reduced,
            "paste_masks": self.paste_masks}


@register_model(tags=("detection",))
def fasterrcnn_resnet50_fpn(**kwargs) -> FasterRCNN:
  """Faster R-CNN ResNet-50-FPN, torchvision's `fasterrcnn_resnet50_fpn`: with 91 classes its 41,755,286
  parameters plus the body's 53,120 BatchNorm scales and shifts (buffers of its FrozenBatchNorm2d)."""
  return FasterRCNN(**kwargs)


@register_model(tags=("detection", "segmentation"))
def maskrcnn_resnet50_fpn(**kwargs) -> MaskRCNN:
  """Mask R-CNN ResNet-50-FPN, torchvision's `maskrcnn_resnet50_fpn`: with 91 classes its 44,401,393
  parameters plus the body's 53,120 BatchNorm scales and shifts (buffers of its FrozenBatchNorm2d)."""
  return MaskRCNN(**kwargs)
