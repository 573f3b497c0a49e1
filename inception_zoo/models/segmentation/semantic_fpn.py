"""Semantic FPN: the semantic branch of Panoptic FPN on a ResNet (Kirillov, Girshick, He, Dollar, "Panoptic
Feature Pyramid Networks", CVPR 2019, arXiv:1901.02446, Section 3 and Fig. 3).

Follows mmsegmentation's `configs/_base_/models/fpn_r50.py` layer for layer, with its parameter names below the
backbone, so an mmseg state dict converts by the timm rule once its neck and stem names are mapped
(`inception_zoo.convert.mmseg_key`):

* backbone: ResNetV1c-50 (`open-mmlab://resnet50_v1c`): the deep stem of 3x3 convolutions at 32, 32, 64 channels
  (here `stem_type='deep', stem_width=32`, timm's `resnet50c`), torchvision-style bottlenecks, output stride 32;
  other stems or bodies through `body_options` / `body`.
* neck `FPN(in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=4)`: mmseg's FPN neck is torchvision's
  (`inception_zoo.models.detection.fpn.FPN`, no extra level): 1x1 laterals and 3x3 outputs with bias, no norm,
  nearest-neighbour top-down upsampling to the lateral's size; only the init differs (Xavier-uniform,
  `weight_init='mmseg'`).
* decode head `FPNHead(feature_strides=[4, 8, 16, 32], channels=128, dropout 0.1)` (`mmseg/models/decode_heads/
  fpn_head.py`): per level max(1, log2(stride / 4)) ConvModules (3x3 conv 128 without bias, BN, ReLU; mmcv's
  Kaiming-normal fan_out init), each followed by a bilinear x2 upsampling (align_corners=False) when the stride is
  above 4; the levels summed (each resized to the stride-4 map), Dropout2d(0.1), `conv_seg` 1x1 (N(0, 0.01), bias
  0); the logits bilinearly resized to the input (mmseg's `predict_by_feat`).

`aux=True` adds mmseg's FCNHead on C4 (3x3 ConvModule to `aux_channels`, Dropout2d(0.1), `conv_seg`), as its
DeepLab / PSPNet configs do. `model.apply(variables, images, train=False)` on NHWC images returns
{'logits': (B, H, W, num_classes)} (and 'aux_logits'); `train` runs BatchNorm (mmseg's SyncBN: the batch over the
mesh under data parallelism) and the dropouts (rng 'dropout').
"""
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import check_image
from inception_zoo.layers.resize import resize_bilinear
from inception_zoo.models import resnet  # noqa: F401  (registers the backbones)
from inception_zoo.models.detection.fpn import FPN
from inception_zoo.models.segmentation.common import ConvModule, classifier_conv, fcn_head, has_option, make_body
from inception_zoo.registry import register_model

LEVELS = ("C2", "C3", "C4", "C5")


class ScaleHead(nn.Module):
  """One level of the FPNHead (an nn.Sequential): `length` x (ConvModule, [x2 bilinear upsampling]); the
  upsamplings hold the odd indices."""
  channels: int
  length: int
  upsample: bool
  align_corners: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    for k in range(self.length):
      x = ConvModule(self.channels, 3, self.bn_momentum, self.dtype,
                     name=f"layers_{2 * k if self.upsample else k}")(x, train=train)
      if self.upsample:  # mmseg's Upsample(scale_factor=2): the size int(2 * side), then resize
        x = resize_bilinear(x, (2 * x.shape[1], 2 * x.shape[2]), self.align_corners)
    return x


class ScaleHeads(nn.Module):
  """FPNHead's `scale_heads` ModuleList, one `ScaleHead` per level."""
  channels: int
  feature_strides: Tuple[int, ...]
  align_corners: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], *, train: bool):
    first = self.feature_strides[0]
    outs = []
    for i, (x, stride) in enumerate(zip(features, self.feature_strides)):
      length = max(1, int(math.log2(stride) - math.log2(first)))
      outs.append(ScaleHead(self.channels, length, stride != first, self.align_corners, self.bn_momentum,
                            self.dtype, name=f"layers_{i}")(x, train=train))
    return outs


class FPNHead(nn.Module):
  """mmseg's FPNHead (Kirillov et al. 2019, Fig. 3): logits at the first level's resolution."""
  num_classes: int
  channels: int = 128
  feature_strides: Tuple[int, ...] = (4, 8, 16, 32)
  dropout: float = 0.1
  align_corners: bool = False
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], *, train: bool):
    outs = ScaleHeads(self.channels, self.feature_strides, self.align_corners, self.bn_momentum, self.dtype,
                      name="scale_heads")(features, train=train)
    y = outs[0]
    for x in outs[1:]:  # sizes differ where a side is not a multiple of 32
      y = y + resize_bilinear(x, y.shape[1:3], self.align_corners)
    y = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(y)  # Dropout2d
    return classifier_conv(self.num_classes, y.shape[-1], "mmseg", self.dtype, "conv_seg")(y)


class SemanticFPN(nn.Module):
  """Semantic FPN (mmseg's `fpn_r50`) on a registered ResNet: backbone, FPN neck, FPNHead."""
  num_classes: int = 19  # mmseg's config (Cityscapes)
  body: str = "resnet50"
  body_options: Optional[Dict[str, Any]] = None  # its options; the builder's default is ResNetV1c's stem
  fpn_channels: int = 256
  channels: int = 128  # the FPNHead's
  dropout: float = 0.1
  aux: bool = False  # mmseg's FCNHead on C4, 'aux_logits'
  aux_channels: int = 256
  bn_momentum: float = 0.9  # PyTorch's 0.1, backbone included
  dtype: Any = jnp.float32

  head_name = "conv_seg"  # the last 1x1 (head reset on another class count)
  min_size = resnet.MIN_SIZE
  tiny_options = {"body_options": resnet.ResNet.tiny_options, "fpn_channels": 8, "channels": 8, "aux_channels": 8}

  def setup(self):
    # The head's upsampling follows mmseg's fixed strides 4..32, so the body keeps its output stride at 32.
    self.backbone = make_body(self.body, self.body_options, "semantic fpn", output_stride=32,
                              bn_momentum=self.bn_momentum, dtype=self.dtype)
    self.neck = FPN(self.fpn_channels, extra="none", weight_init="mmseg")
    self.decode_head = FPNHead(self.num_classes, self.channels, (4, 8, 16, 32), self.dropout, False,
                               self.bn_momentum, self.dtype)
    if self.aux:
      self.auxiliary_head = fcn_head("mmseg", self.num_classes, self.aux_channels, self.bn_momentum, self.dtype)

  def __call__(self, images, *, train: bool = False) -> Dict[str, jnp.ndarray]:
    check_image(images, "semantic fpn", self.min_size)
    _, features = self.backbone(images.astype(self.dtype), train=train)
    missing = [k for k in LEVELS if k not in features]
    if missing:
      raise UserError(f"semantic fpn needs the backbone's C2..C5; {self.body} has no {missing[0]}")
    logits = self.decode_head(self.neck([features[k] for k in LEVELS]), train=train)
    size = images.shape[1:3]
    out = {"logits": resize_bilinear(logits, size, align_corners=False)}
    if self.aux:
      out["aux_logits"] = resize_bilinear(self.auxiliary_head(features["C4"], train=train), size, False)
    return out


@register_model(tags=("segmentation",))
def semantic_fpn_resnet50(**kwargs) -> SemanticFPN:
  """mmseg's `fpn_r50` (Semantic FPN, ResNetV1c-50): the deep stem at 32, 32, 64 channels unless `body_options`
  says otherwise (e.g. `{'stem_type': '', 'stem_width': 64}` for torchvision's 7x7 stem)."""
  if has_option(kwargs.get("body", "resnet50"), "stem_type"):
    kwargs["body_options"] = {"stem_type": "deep", "stem_width": 32, **(kwargs.get("body_options") or {})}
  return SemanticFPN(**kwargs)
