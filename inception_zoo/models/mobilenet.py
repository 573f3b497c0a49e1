"""MobileNet v1, MobileNet v2 and EfficientNet-B0: the mobile networks that Fast Sparse ConvNets prunes.

Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam. "MobileNets: Efficient Convolutional
Neural Networks for Mobile Vision Applications", arXiv:1704.04861 (2017), Section 3 and Table 1:
depthwise-separable layers, 3x3 depthwise conv-BN-ReLU then 1x1 pointwise conv-BN-ReLU, width
multiplier alpha (Section 3.3).
Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
CVPR 2018 (arXiv:1801.04381), Section 3 and Tables 1-2: 1x1 expansion (factor t) with ReLU6, 3x3
depthwise with ReLU6, linear 1x1 projection, identity shortcut when stride is 1 and the width is
unchanged; below width 1 the last 1280-channel conv is not narrowed (Section 5.1).
Tan, Le. "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019
(arXiv:1905.11946), Section 4 and Table 1 (EfficientNet-B0): the same MBConv block with 3x3/5x5
depthwise kernels, Swish (SiLU) and squeeze-and-excitation; dropout 0.2 and stochastic depth with
survival probability 0.8 (Section 5.2).

All three are timm's `EfficientNet` class, and module names follow it (`conv_stem`, `bn1`,
`blocks.<stage>.<block>.{conv_pw,bn1,conv_dw,bn2,se.conv_reduce,se.conv_expand,conv_pwl,bn3}`,
`conv_head`, `bn2`, `classifier`), so `inception_zoo.convert` loads timm's `mobilenetv1_100`,
`mobilenetv2_100` and `efficientnet_b0` weights by rule. Every 1x1 convolution is a plain `nn.Conv`
with a (1, 1) kernel (`conv_pw`, `conv_pwl`, `conv_head`, the SE pair), so sparse inference can find
them by path and kernel shape. As in timm: PyTorch's symmetric padding (k // 2), BatchNorm eps 1e-5,
the SE width from the block's input channels, the skip only where stride is 1 and the width is kept
(never in MobileNet v1's `dsa` blocks), and stochastic depth on those skips at rate
`drop_path_rate * i / n` for block i of n.

`output_stride` 16 or 8 (DeepLabV3+'s MobileNet v2 backbone: torchvision's / VainF's DeepLabV3Plus-Pytorch
`network/backbone/mobilenetv2.py`, timm's `output_stride`) keeps every block from that stride on at stride 1 and
dilates the depthwise convolutions instead: a block that would have strided runs at the previous dilation, the
blocks after it at twice that. Padding stays symmetric (dilation * (k // 2)), as timm; VainF's copy pads the block's
input before the 1x1 expansion instead, which differs at the borders. The features keep their level names
(C5 is the last stage, at stride 16 or 8 then). `tail_dilations` instead dilates the depthwise convolutions of the
last blocks at the given rates, strides kept (MGD's MobileNet v2 student: `_nostride_dilate` on features[15:18]).
"""
import functools
import math
from typing import Any, Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import Seq, check_image, classifier_head
from inception_zoo.layers.common import conv_init, drop_path, drop_path_rates
from inception_zoo.registry import register_model

# Stride 32: the last stage's map is one pixel at 32 px.
MIN_SIZE = 32
ACTIVATIONS = {"relu": nn.relu, "relu6": nn.relu6, "silu": nn.silu}

# A stage: (block kind, repeats, depthwise kernel, stride of its first block, expansion t, output
# channels, SE ratio). Kinds: 'ds' depthwise-separable with a linear pointwise conv, 'dsa' the same
# with an activation after it (MobileNet v1), 'ir' inverted residual (MBConv).
Stage = Tuple[str, int, int, int, float, int, float]


def make_divisible(v: float, divisor: int = 8) -> int:
  """Nearest multiple of `divisor` that is not more than 10% below `v` (TF's and timm's rule)."""
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new_v + divisor if new_v < 0.9 * v else new_v


def conv(features, kernel, stride=1, groups=1, bias=False, dtype=jnp.float32, name=None, dilation=1):
  pad = dilation * (kernel // 2)  # PyTorch's symmetric padding for odd kernels
  return nn.Conv(features, (kernel, kernel), stride, padding=((pad, pad), (pad, pad)),
                 kernel_dilation=(dilation, dilation), feature_group_count=groups, use_bias=bias,
                 kernel_init=conv_init, dtype=dtype, name=name)


class SqueezeExcite(nn.Module):
  """x * sigmoid(W2 act(W1 mean(x) + b1) + b2) with two 1x1 convolutions (Hu et al. 2018)."""
  reduced: int
  act: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = conv(self.reduced, 1, bias=True, dtype=self.dtype, name="conv_reduce")(s)
    s = conv(x.shape[-1], 1, bias=True, dtype=self.dtype, name="conv_expand")(
        ACTIVATIONS[self.act](s))
    return x * nn.sigmoid(s)


class Block(nn.Module):
  """One block: 'ds'/'dsa' (depthwise, [SE], pointwise) or 'ir' (expand, depthwise, [SE], project)."""
  kind: str
  out_chs: int
  kernel: int
  stride: int
  expansion: float
  se_ratio: float
  act: str
  drop_path: float
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  dilation: int = 1  # of the depthwise convolution

  def bn(self, name, train):
    return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                        dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, x, *, train):
    act = ACTIVATIONS[self.act]
    in_chs, shortcut = x.shape[-1], x
    # timm numbers the BatchNorms in order of use, so the expansion shifts the later names.
    if self.kind == "ir":
      mid = make_divisible(in_chs * self.expansion)
      x = conv(mid, 1, dtype=self.dtype, name="conv_pw")(x)
      x = act(self.bn("bn1", train)(x))
      bn_dw, pointwise, bn_pw = "bn2", "conv_pwl", "bn3"
    else:
      mid = in_chs
      bn_dw, pointwise, bn_pw = "bn1", "conv_pw", "bn2"
    x = conv(mid, self.kernel, self.stride, groups=mid, dtype=self.dtype, name="conv_dw",
             dilation=self.dilation)(x)
    x = act(self.bn(bn_dw, train)(x))
    if self.se_ratio:
      # The SE width comes from the block's input, not the expanded width (timm: ratio / t).
      reduced = round(mid * self.se_ratio / self.expansion)
      x = SqueezeExcite(reduced, self.act, self.dtype, name="se")(x)
    x = self.bn(bn_pw, train)(conv(self.out_chs, 1, dtype=self.dtype, name=pointwise)(x))
    if self.kind == "dsa":
      return act(x)  # MobileNet v1: an activation after the pointwise conv, and never a skip
    if self.stride == 1 and in_chs == self.out_chs:
      x = shortcut + drop_path(self.drop_path, train)(x)
    return x  # linear bottleneck (MobileNet v2, Section 3.2)


class EfficientNet(nn.Module):
  """timm's EfficientNet family: stem, stages of blocks, optional 1x1 head conv, pooled classifier.

  Returns `(logits, features)`: features holds C1..C5, the output of the last stage at each stride
  2..32 (timm's `features_only` maps; the nominal strides when `output_stride` < 32), and pre_logits
  (pooled, after the head conv)."""
  num_classes: int = 1000
  stages: Tuple[Stage, ...] = ()
  stem_chs: int = 32
  head_chs: int = 1280  # 0: no head conv (MobileNet v1)
  head_keeps_width: bool = False  # MobileNet v2: the head is not narrowed when width < 1
  width: float = 1.0  # width multiplier (MobileNet's alpha, EfficientNet's w)
  depth: float = 1.0  # depth multiplier: repeats of each stage scaled and rounded up (EfficientNet's d)
  act: str = "relu6"
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  bn_momentum: float = 0.9  # PyTorch's 0.1
  dtype: Any = jnp.float32
  output_stride: int = 32  # 32 | 16 | 8: the strides from there on replaced by dilation
  tail_dilations: Tuple[int, ...] = ()  # depthwise rates of the last len() blocks (all stages), strides kept

  head_name = "classifier"  # timm's classifier Linear (weight conversion, head reset)
  min_size = MIN_SIZE
  # For fast tests of the code paths: one block per stage at 1/4 width; there the first
  # block keeps the stem's 8 channels, so MobileNet v2 and EfficientNet still run a skip + drop path.
  tiny_options = {"width": 0.25, "depth": 0.25}

  def channels(self, c: int) -> int:
    return make_divisible(c * self.width)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_image(x, "efficientnet/mobilenet", MIN_SIZE)
    if self.act not in ACTIVATIONS:
      raise UserError(f"act must be one of {sorted(ACTIVATIONS)}; got '{self.act}'")
    if not self.stages or any(s[0] not in ("ds", "dsa", "ir") for s in self.stages):
      raise UserError(f"stages must be a non-empty table of ('ds' | 'dsa' | 'ir', repeats, kernel, "
                      f"stride, expansion, channels, se_ratio) rows; got {self.stages}")
    if self.width <= 0 or self.depth <= 0:
      raise UserError(f"width and depth must be positive; got width={self.width}, depth={self.depth}")
    if self.output_stride not in (8, 16, 32):
      raise UserError(f"efficientnet/mobilenet output_stride must be 8, 16 or 32; got {self.output_stride}")
    repeats = [int(math.ceil(s[1] * self.depth)) for s in self.stages]
    tail = tuple(self.tail_dilations)
    if len(tail) > sum(repeats):
      raise UserError(f"efficientnet/mobilenet tail_dilations has {len(tail)} rates but the network only "
                      f"{sum(repeats)} blocks")
    if tail and self.output_stride != 32:
      raise UserError(f"efficientnet/mobilenet tail_dilations takes output_stride 32; got {self.output_stride}")
    act = ACTIVATIONS[self.act]
    bn = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                           epsilon=1e-5, dtype=self.dtype)
    x = conv(self.channels(self.stem_chs), 3, 2, dtype=self.dtype, name="conv_stem")(
        x.astype(self.dtype))
    x = act(bn(name="bn1")(x))

    # timm's rate for block i of n is drop_path_rate * i / n, so the last block stays below the rate.
    rates = drop_path_rates(self.drop_path_rate * (sum(repeats) - 1) / sum(repeats), repeats)
    # `stride` is the nominal one, which names the levels; `net_stride` the one reached, `dilation` the
    # depthwise rate of the next block (timm's EfficientNetBuilder: a block that would pass the output stride
    # runs unstrided at the current rate, the later ones at the rate times its stride).
    stages, level_of_stage, stride, net_stride, dilation = [], {}, 2, 2, 1
    for i, ((kind, _, kernel, first_stride, expansion, out_chs, se), n) in enumerate(
        zip(self.stages, repeats)):
      blocks = []
      for j in range(n):
        block_stride, block_dilation = (first_stride if j == 0 else 1), dilation
        if net_stride * block_stride > self.output_stride:
          block_stride, dilation = 1, dilation * block_stride
        net_stride *= block_stride
        tail_index = len(tail) - sum(repeats) + sum(repeats[:i]) + j  # >= 0 in the dilated tail
        if tail_index >= 0:
          block_dilation = tail[tail_index]
        blocks.append(Block(kind, self.channels(out_chs), kernel, block_stride, expansion, se, self.act,
                            rates[i][j], self.bn_momentum, self.dtype, dilation=block_dilation))
      stages.append(Seq(blocks))
      stride *= first_stride
      level_of_stage[int(math.log2(stride))] = i  # a later stage at the same stride replaces it
    x, feats = Seq(stages, name="blocks")(x, train=train, capture=tuple(level_of_stage.values()))
    out = {f"C{level}": feats[i] for level, i in sorted(level_of_stage.items())}

    if self.head_chs:
      head = self.channels(self.head_chs)
      head = max(head, self.head_chs) if self.head_keeps_width else head
      x = conv(head, 1, dtype=self.dtype, name="conv_head")(x)
      x = act(bn(name="bn2")(x))
    logits, out["pre_logits"] = classifier_head(x, num_classes=self.num_classes,
                                                drop_rate=self.drop_rate, name="classifier",
                                                train=train)
    return logits, out


# Table 1 of each paper, written as timm's arch_def strings are.
MOBILENET_V1 = (("dsa", 1, 3, 1, 1, 64, 0), ("dsa", 2, 3, 2, 1, 128, 0), ("dsa", 2, 3, 2, 1, 256, 0),
                ("dsa", 6, 3, 2, 1, 512, 0), ("dsa", 2, 3, 2, 1, 1024, 0))
MOBILENET_V2 = (("ds", 1, 3, 1, 1, 16, 0), ("ir", 2, 3, 2, 6, 24, 0), ("ir", 3, 3, 2, 6, 32, 0),
                ("ir", 4, 3, 2, 6, 64, 0), ("ir", 3, 3, 1, 6, 96, 0), ("ir", 3, 3, 2, 6, 160, 0),
                ("ir", 1, 3, 1, 6, 320, 0))
EFFICIENTNET_B0 = (("ds", 1, 3, 1, 1, 16, 0.25), ("ir", 2, 3, 2, 6, 24, 0.25),
                   ("ir", 2, 5, 2, 6, 40, 0.25), ("ir", 3, 3, 2, 6, 80, 0.25),
                   ("ir", 3, 5, 1, 6, 112, 0.25), ("ir", 4, 5, 2, 6, 192, 0.25),
                   ("ir", 1, 3, 1, 6, 320, 0.25))
VARIANTS = {
    "mobilenetv1_100": dict(stages=MOBILENET_V1, head_chs=0, act="relu6"),
    "mobilenetv2_100": dict(stages=MOBILENET_V2, head_keeps_width=True, act="relu6"),
    "efficientnet_b0": dict(stages=EFFICIENTNET_B0, act="silu", drop_rate=0.2, drop_path_rate=0.2),
}


@register_model
def mobilenetv1_100(**kwargs) -> EfficientNet:
  """MobileNet v1, width 1.0 (4,231,976 parameters with 1000 classes, as timm). ReLU6 as timm and
  TF-slim's MobileNet; the paper writes ReLU (`act='relu'`)."""
  return EfficientNet(**{**VARIANTS["mobilenetv1_100"], **kwargs})


@register_model
def mobilenetv2_100(**kwargs) -> EfficientNet:
  """MobileNet v2, width 1.0 (3,504,872 parameters with 1000 classes, as timm)."""
  return EfficientNet(**{**VARIANTS["mobilenetv2_100"], **kwargs})


@register_model
def efficientnet_b0(**kwargs) -> EfficientNet:
  """EfficientNet-B0 (5,288,548 parameters with 1000 classes, as timm). Dropout 0.2 and stochastic
  depth 0.2 by default, the paper's training setting (timm's builder defaults both to 0)."""
  return EfficientNet(**{**VARIANTS["efficientnet_b0"], **kwargs})
