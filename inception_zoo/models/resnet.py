"""ResNet (ImageNet and CIFAR layouts), Wide ResNet-50-2, SE-ResNeXt-50 and SENet-154.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385):
Section 3.3 and Table 1 (ImageNet ResNet-18/34/50/101/152, basic and bottleneck blocks, projection
shortcuts where the shape changes: option B), Section 4.2 (CIFAR-10 ResNet-20/32/44/56/110).
Zagoruyko, Komodakis. "Wide Residual Networks", BMVC 2016 (arXiv:1605.07146): widening the
bottleneck's inner 3x3 convolution (Wide ResNet-50-2: twice the inner width of ResNet-50).
Xie, Girshick, Dollar, Tu, He. "Aggregated Residual Transformations for Deep Neural Networks"
(ResNeXt), CVPR 2017 (arXiv:1611.05431), Section 3.3 and Table 1: the bottleneck's 3x3 convolution
split into `cardinality` groups, inner width floor(planes * base_width / 64) * cardinality (32x4d).
Hu, Shen, Sun. "Squeeze-and-Excitation Networks", CVPR 2018 (arXiv:1709.01507), Section 3 and
Figs. 1-3: the SE block (global average pooling, 1x1 reduction by r = 16, ReLU, 1x1 expansion,
sigmoid gate that rescales the channels) on the residual branch before the addition; the appendix
(details of SENet-154): SE-ResNeXt-152 (64x4d) with the first 1x1 width of each bottleneck halved,
the 7x7 stem replaced by three 3x3 convolutions and the 1x1/2 projections by 3x3/2 convolutions.

ImageNet layout, `ResNet`: 7x7/2 convolution, BN, ReLU, 3x3/2 max pooling, four stages (layer1..4)
of basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 x4) blocks, the first block of stages 2-4 at
stride 2, global average pooling, linear classifier. It is timm's `ResNet`, module for module, so
`inception_zoo.convert` loads `resnet*` / `wide_resnet50_2` weights by rule; like timm (and
torchvision's "v1.5") the bottleneck strides in its 3x3 convolution, where the paper's Table 1
network strides in the first 1x1. The `s` variants (`resnet50s`, `resnet152s`: Gluon's ResNet-v1s,
MEAL V2's ResNet-152 teacher) replace the 7x7 stem by three 3x3 convolutions (64, 64, 128 channels).
The ResNeXt/SE options are timm's too: `cardinality`, `base_width`, `attn='se'` (module `se.fc1`,
`se.fc2`, reduced width `make_divisible(channels / 16, 8)` rounded to nearest, at least 8),
`down_kernel_size` (the strided projections' kernel) and `block_reduce_first` (first 1x1 width =
inner width / it), so `seresnext50_32x4d` and `senet154` (Gluon's SENet-154, MEAL V2's teacher) load
by the same rule.

Dilation (Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation"
(DeepLabV3), arXiv:1706.05587, Section 3.1): `output_stride` 16 or 8 replaces the stride of the last one or two
stages by dilation, as torchvision's `replace_stride_with_dilation` and timm's `output_stride`: a dilated stage's
first block runs its 3x3 at the previous dilation and its projection shortcut unstrided, its other blocks at the
new one (twice the previous). `multi_grid` (DeepLabV3's Multi_Grid, Section 3.2) instead gives every block j of the
last stage the rate `dilation * multi_grid[j]` in all its 3x3 convolutions, the first block's included, which is
what the CPS / MGD code's `_nostride_dilate` loop does (rates 2, 4, 8 at output stride 16). Parameters keep their
names and shapes, so the same timm weights load.

CIFAR layout, `CifarResNet` (Section 4.2): 3x3 convolution to 16 channels, three stages of n basic
blocks at 16/32/64 channels on 32/16/8 px maps (depth 6n + 2), global average pooling, linear
classifier. Shortcuts are identities everywhere, option A: where a stage halves the map and doubles
the width, the shortcut takes every second pixel and appends zero channels, so it adds no parameters
(ResNet-20: 269,722 parameters with 10 classes, the paper's "0.27M").
"""
import functools
from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import Seq, check_image, classifier_head
from inception_zoo.layers.common import conv_init, drop_path, drop_path_rates
from inception_zoo.registry import register_model

# Smallest input whose stride-32 output (C5) is at least one pixel.
MIN_SIZE = 32


def conv(features: int, kernel: int, strides: int = 1, groups: int = 1, name: Optional[str] = None,
         dtype: Any = jnp.float32, dilation: int = 1):
  """PyTorch `Conv2d(kernel, stride, padding=dilation * (kernel // 2), dilation, groups, bias=False)`."""
  pad = dilation * (kernel // 2)
  return nn.Conv(features, (kernel, kernel), strides, padding=((pad, pad), (pad, pad)),
                 kernel_dilation=(dilation, dilation), feature_group_count=groups, use_bias=False,
                 kernel_init=conv_init, dtype=dtype, name=name)


class SqueezeExcite(nn.Module):
  """x * sigmoid(fc2(relu(fc1(mean(x))))) with biased 1x1 convolutions (Hu et al., Fig. 3)."""
  reduced: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.Conv(self.reduced, (1, 1), kernel_init=conv_init, dtype=self.dtype, name="fc1")(s)
    s = nn.relu(s)
    s = nn.Conv(x.shape[-1], (1, 1), kernel_init=conv_init, dtype=self.dtype, name="fc2")(s)
    return x * nn.sigmoid(s)


def attention(attn: str, channels: int, dtype: Any) -> Callable:
  """timm's `create_attn(attn, channels)`: identity for '', the SE block (ratio 1/16, divisor 8,
  nearest multiple: timm's `make_divisible(..., round_limit=0)`) for 'se'."""
  if not attn:
    return lambda x: x
  return SqueezeExcite(max(8, int(channels / 16 + 4) // 8 * 8), dtype, name="se")


class BasicBlock(nn.Module):
  """Two 3x3 convolutions (Fig. 5 left); the first one strides. Dilated (timm's rule): the first at
  `first_dilation`, the second at `dilation`."""
  norm: Callable[..., nn.Module]  # BatchNorm factory, takes `name` and `train`
  planes: int
  strides: int
  project: bool  # projection + BN on the shortcut (option B)
  drop_path: float
  attn: str = ""
  reduce_first: int = 1
  down_kernel: int = 1
  dtype: Any = jnp.float32
  dilation: int = 1
  first_dilation: int = 1

  @nn.compact
  def __call__(self, x, *, train):
    shortcut = x
    y = conv(self.planes // self.reduce_first, 3, self.strides, name="conv1", dtype=self.dtype,
             dilation=self.first_dilation)(x)
    y = nn.relu(self.norm(name="bn1", train=train)(y))
    y = conv(self.planes, 3, name="conv2", dtype=self.dtype, dilation=self.dilation)(y)
    y = attention(self.attn, self.planes, self.dtype)(self.norm(name="bn2", train=train)(y))
    if self.project:
      shortcut = Projection(self.norm, self.planes, self.strides, self.down_kernel, self.dtype,
                            dilation=self.dilation, first_dilation=self.first_dilation,
                            name="downsample")(x, train=train)
    return nn.relu(shortcut + drop_path(self.drop_path, train)(y))


class Bottleneck(nn.Module):
  """1x1 reduction, 3x3 (strided, in `groups` groups), 1x1 expansion to 4x `planes` (Fig. 5 right),
  optional SE before the addition. `width` is the inner width: `planes` in the paper, `2 * planes`
  in Wide ResNet-50-2, `planes / 64 * base_width * cardinality` in ResNeXt; the first 1x1 gives
  `width / reduce_first` (2 in SENet-154). Dilated, the 3x3 runs at `first_dilation` (torchvision's and
  timm's rule: the previous stage's dilation in a dilated stage's first block, its own in the others)."""
  norm: Callable[..., nn.Module]
  planes: int
  width: int
  strides: int
  project: bool
  drop_path: float
  attn: str = ""
  reduce_first: int = 1
  down_kernel: int = 1
  groups: int = 1
  dtype: Any = jnp.float32
  dilation: int = 1
  first_dilation: int = 1

  @nn.compact
  def __call__(self, x, *, train):
    shortcut = x
    y = conv(self.width // self.reduce_first, 1, name="conv1", dtype=self.dtype)(x)
    y = nn.relu(self.norm(name="bn1", train=train)(y))
    y = conv(self.width, 3, self.strides, groups=self.groups, name="conv2", dtype=self.dtype,
             dilation=self.first_dilation)(y)
    y = nn.relu(self.norm(name="bn2", train=train)(y))
    y = conv(self.planes * 4, 1, name="conv3", dtype=self.dtype)(y)
    y = attention(self.attn, self.planes * 4, self.dtype)(self.norm(name="bn3", train=train)(y))
    if self.project:
      shortcut = Projection(self.norm, self.planes * 4, self.strides, self.down_kernel, self.dtype,
                            dilation=self.dilation, first_dilation=self.first_dilation,
                            name="downsample")(x, train=train)
    return nn.relu(shortcut + drop_path(self.drop_path, train)(y))


class Projection(nn.Module):
  """The projection shortcut, option B: strided 1x1 convolution and BN (timm's `downsample.0/.1`).
  A strided one may take a larger `kernel` (3 in SENet-154); an unstrided one is 1x1, except in a
  dilated stage, where timm's `downsample_conv` keeps the kernel at the block's first dilation."""
  norm: Callable[..., nn.Module]
  features: int
  strides: int
  kernel: int = 1
  dtype: Any = jnp.float32
  dilation: int = 1  # the stage's
  first_dilation: int = 1  # the block's first 3x3's

  @nn.compact
  def __call__(self, x, *, train):
    kernel = self.kernel if self.strides != 1 or self.dilation != 1 else 1
    x = conv(self.features, kernel, self.strides, name="layers_0", dtype=self.dtype,
             dilation=self.first_dilation if kernel > 1 else 1)(x)
    return self.norm(name="layers_1", train=train)(x)


class DeepStem(nn.Module):
  """Three 3x3 convolutions (stride 2, 1, 1) in place of the 7x7; the BN and ReLU after the last one
  are the network's `bn1`. Names are timm's `conv1` Sequential indices (ReLUs at 2 and 5)."""
  norm: Callable[..., nn.Module]
  width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train):
    x = conv(self.width, 3, 2, name="layers_0", dtype=self.dtype)(x)
    x = nn.relu(self.norm(name="layers_1", train=train)(x))
    x = conv(self.width, 3, name="layers_3", dtype=self.dtype)(x)
    x = nn.relu(self.norm(name="layers_4", train=train)(x))
    return conv(2 * self.width, 3, name="layers_6", dtype=self.dtype)(x)


def batch_norm(bn_momentum: float, dtype: Any):
  def make(*, name: str, train: bool):
    return nn.BatchNorm(use_running_average=not train, momentum=bn_momentum, epsilon=1e-5,
                        dtype=dtype, name=name)
  return make


class ResNet(nn.Module):
  """ImageNet ResNet. Returns `(logits, features)`: features holds C1 (the stem's ReLU, stride 2),
  C2..C5 (layer1..layer4, strides 4..32, or 4, 8, 16, 16 at output stride 16 and 4, 8, 8, 8 at 8)
  and pre_logits."""
  num_classes: int = 1000
  block: str = "bottleneck"  # 'basic' | 'bottleneck'
  layers: Tuple[int, ...] = (3, 4, 6, 3)  # blocks per stage (Table 1)
  channels: Tuple[int, ...] = (64, 128, 256, 512)  # `planes` of each stage
  base_width: int = 64  # bottleneck inner width = planes * base_width / 64 (128: Wide ResNet-x-2)
  cardinality: int = 1  # groups of the bottleneck's 3x3 (ResNeXt), multiplies the inner width
  attn: str = ""  # '' | 'se' (squeeze-and-excitation before each block's addition)
  block_reduce_first: int = 1  # first 1x1 width = inner width / this (2 in SENet-154)
  down_kernel_size: int = 1  # kernel of the strided projection shortcuts (3 in SENet-154)
  stem_type: str = ""  # '' (7x7) | 'deep' (three 3x3)
  stem_width: int = 64  # 7x7 width; for 'deep', the first two 3x3 widths (the third is twice it)
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  bn_momentum: float = 0.9  # PyTorch's 0.1
  dtype: Any = jnp.float32
  output_stride: int = 32  # 32 | 16 | 8: the last 0, 1 or 2 stages dilated instead of strided
  multi_grid: Tuple[int, ...] = ()  # per-block rate multipliers of the last stage (DeepLabV3); () for none

  head_name = "fc"  # timm's classifier (weight conversion, head reset)
  min_size = MIN_SIZE
  tiny_options = {"layers": (1, 1, 1, 1), "channels": (4, 4, 8, 8), "stem_width": 8}

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_image(x, "resnet", MIN_SIZE)
    if self.block not in ("basic", "bottleneck"):
      raise UserError(f"resnet block must be 'basic' or 'bottleneck'; got '{self.block}'")
    if self.stem_type not in ("", "deep"):
      raise UserError(f"resnet stem_type must be '' or 'deep'; got '{self.stem_type}'")
    if self.attn not in ("", "se"):
      raise UserError(f"resnet attn must be '' or 'se'; got '{self.attn}'")
    if self.block == "basic" and (self.cardinality, self.base_width) != (1, 64):
      raise UserError(f"resnet basic blocks take cardinality 1 and base_width 64 (as timm); "
                      f"got {self.cardinality} and {self.base_width}")
    if len(self.layers) != len(self.channels):
      raise UserError(f"resnet has {len(self.layers)} stages in `layers` but "
                      f"{len(self.channels)} in `channels`")
    if self.output_stride not in (8, 16, 32):
      raise UserError(f"resnet output_stride must be 8, 16 or 32; got {self.output_stride}")
    if self.multi_grid and len(self.multi_grid) != self.layers[-1]:
      raise UserError(f"resnet multi_grid needs one rate per block of the last stage ({self.layers[-1]}); "
                      f"got {tuple(self.multi_grid)}")
    norm = batch_norm(self.bn_momentum, self.dtype)
    x = x.astype(self.dtype)
    if self.stem_type == "deep":
      x = DeepStem(norm, self.stem_width, self.dtype, name="conv1")(x, train=train)
    else:
      x = conv(self.stem_width, 7, 2, name="conv1", dtype=self.dtype)(x)
    x = nn.relu(norm(name="bn1", train=train)(x))
    out = {"C1": x}
    x = nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))

    rates = drop_path_rates(self.drop_path_rate, self.layers)
    options = dict(attn=self.attn, reduce_first=self.block_reduce_first,
                   down_kernel=self.down_kernel_size, dtype=self.dtype)
    net_stride, dilation = 4, 1  # after the stem and the max pooling
    for i, planes in enumerate(self.channels):
      stage_strides, first_dilation = (1 if i == 0 else 2), dilation
      if stage_strides == 2 and net_stride >= self.output_stride:
        stage_strides, dilation = 1, dilation * 2  # replace the stride by dilation
      net_stride *= stage_strides
      if self.block == "basic":
        make, out_chs = functools.partial(BasicBlock, norm, planes, **options), planes
      else:
        width = planes * self.base_width // 64 * self.cardinality  # timm's floor, then the groups
        make = functools.partial(Bottleneck, norm, planes, width, groups=self.cardinality,
                                 **options)
        out_chs = 4 * planes
      blocks = []
      for j, rate in enumerate(rates[i]):
        strides = stage_strides if j == 0 else 1
        project = j == 0 and (strides != 1 or x.shape[-1] != out_chs)
        first, block_dilation = (first_dilation if j == 0 else dilation), dilation
        if self.multi_grid and i == len(self.channels) - 1:
          first = block_dilation = dilation * self.multi_grid[j]
        blocks.append(make(strides, project, rate, dilation=block_dilation, first_dilation=first))
      x = Seq(blocks, name=f"layer{i + 1}")(x, train=train)
      out[f"C{i + 2}"] = x
    logits, out["pre_logits"] = classifier_head(x, num_classes=self.num_classes, train=train,
                                                drop_rate=self.drop_rate, name="fc")
    return logits, out


class SEResNeXt(ResNet):
  """`ResNet` with grouped bottlenecks and SE. Its own class only for the tiny test network: at
  ResNet's tiny widths (4 and 8 planes) base width 4 leaves no channel per group (4 * 4 / 64 rounds
  to 0), so the tiny one has 4 groups at base width 32."""
  tiny_options = {**ResNet.tiny_options, "cardinality": 4, "base_width": 32}


class CifarResNet(nn.Module):
  """CIFAR ResNet of Section 4.2 (depth 6n + 2). Returns `(logits, features)`: features holds C0, C1,
  C2 (the three stages, strides 1, 2, 4) and pre_logits."""
  num_classes: int = 10
  depth: int = 20  # 20, 32, 44, 56, 110 in the paper (Table 6), 1202 in its Section 4.2
  widths: Tuple[int, int, int] = (16, 32, 64)
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  head_name = "fc"
  min_size = 4  # two stride-2 stages
  tiny_options = {"depth": 8, "widths": (4, 8, 16)}

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_image(x, "cifar resnet", self.min_size)
    if self.depth < 8 or (self.depth - 2) % 6:
      raise UserError(f"cifar resnet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110); "
                      f"got {self.depth}")
    if any(b < a for a, b in zip(self.widths, self.widths[1:])):
      raise UserError(f"cifar resnet widths must not decrease (option A shortcuts pad channels); "
                      f"got {self.widths}")
    n = (self.depth - 2) // 6
    norm = batch_norm(self.bn_momentum, self.dtype)
    x = conv(self.widths[0], 3, name="conv1", dtype=self.dtype)(x.astype(self.dtype))
    x = nn.relu(norm(name="bn1", train=train)(x))
    out = {}
    rates = drop_path_rates(self.drop_path_rate, (n,) * len(self.widths))
    for i, width in enumerate(self.widths):
      blocks = [CifarBlock(norm, width, 2 if i > 0 and j == 0 else 1, rate, self.dtype)
                for j, rate in enumerate(rates[i])]
      x = Seq(blocks, name=f"layer{i + 1}")(x, train=train)
      out[f"C{i}"] = x
    logits, out["pre_logits"] = classifier_head(x, num_classes=self.num_classes, train=train,
                                                drop_rate=self.drop_rate, name="fc")
    return logits, out


class CifarBlock(nn.Module):
  """Basic block with the option-A shortcut: subsampled identity, zero channels appended (equal to
  the reference code's padding on both sides up to a permutation of the branch's channels)."""
  norm: Callable[..., nn.Module]
  planes: int
  strides: int
  drop_path: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train):
    y = conv(self.planes, 3, self.strides, name="conv1", dtype=self.dtype)(x)
    y = nn.relu(self.norm(name="bn1", train=train)(y))
    y = conv(self.planes, 3, name="conv2", dtype=self.dtype)(y)
    y = self.norm(name="bn2", train=train)(y)
    shortcut = x[:, ::self.strides, ::self.strides, :]
    shortcut = jnp.pad(shortcut, ((0, 0),) * 3 + ((0, self.planes - x.shape[-1]),))
    return nn.relu(shortcut + drop_path(self.drop_path, train)(y))


# Table 1 of He et al.; Wide ResNet-50-2 as in Zagoruyko & Komodakis / torchvision.
VARIANTS = {
    "resnet18": dict(block="basic", layers=(2, 2, 2, 2)),
    "resnet34": dict(block="basic", layers=(3, 4, 6, 3)),
    "resnet50": dict(block="bottleneck", layers=(3, 4, 6, 3)),
    "resnet101": dict(block="bottleneck", layers=(3, 4, 23, 3)),
    "resnet152": dict(block="bottleneck", layers=(3, 8, 36, 3)),
    "wide_resnet50_2": dict(block="bottleneck", layers=(3, 4, 6, 3), base_width=128),
    "resnet50s": dict(block="bottleneck", layers=(3, 4, 6, 3), stem_type="deep"),
    "resnet152s": dict(block="bottleneck", layers=(3, 8, 36, 3), stem_type="deep"),
    "seresnext50_32x4d": dict(block="bottleneck", layers=(3, 4, 6, 3), cardinality=32,
                              base_width=4, attn="se"),
    "senet154": dict(block="bottleneck", layers=(3, 8, 36, 3), cardinality=64, base_width=4,
                     attn="se", stem_type="deep", block_reduce_first=2, down_kernel_size=3),
}


@register_model
def resnet18(**kwargs) -> ResNet:
  """ResNet-18 (11,689,512 parameters with 1000 classes, as timm)."""
  return ResNet(**{**VARIANTS["resnet18"], **kwargs})


@register_model
def resnet34(**kwargs) -> ResNet:
  """ResNet-34 (21,797,672 parameters with 1000 classes, as timm)."""
  return ResNet(**{**VARIANTS["resnet34"], **kwargs})


@register_model
def resnet50(**kwargs) -> ResNet:
  """ResNet-50 (25,557,032 parameters with 1000 classes, as timm)."""
  return ResNet(**{**VARIANTS["resnet50"], **kwargs})


@register_model
def resnet101(**kwargs) -> ResNet:
  """ResNet-101 (44,549,160 parameters with 1000 classes, as timm)."""
  return ResNet(**{**VARIANTS["resnet101"], **kwargs})


@register_model
def resnet152(**kwargs) -> ResNet:
  """ResNet-152 (60,192,808 parameters with 1000 classes, as timm)."""
  return ResNet(**{**VARIANTS["resnet152"], **kwargs})


@register_model
def wide_resnet50_2(**kwargs) -> ResNet:
  """Wide ResNet-50-2 (68,883,240 parameters with 1000 classes, as timm)."""
  return ResNet(**{**VARIANTS["wide_resnet50_2"], **kwargs})


@register_model
def resnet50s(**kwargs) -> ResNet:
  """ResNet-50 with the three-convolution stem (25,680,808 parameters, as timm)."""
  return ResNet(**{**VARIANTS["resnet50s"], **kwargs})


@register_model
def resnet152s(**kwargs) -> ResNet:
  """ResNet-152-v1s, MEAL V2's teacher (60,316,584 parameters with 1000 classes, as timm)."""
  return ResNet(**{**VARIANTS["resnet152s"], **kwargs})


@register_model
def seresnext50_32x4d(**kwargs) -> SEResNeXt:
  """SE-ResNeXt-50 (32x4d) (27,559,896 parameters with 1000 classes, as timm)."""
  return SEResNeXt(**{**VARIANTS["seresnext50_32x4d"], **kwargs})


@register_model
def senet154(**kwargs) -> SEResNeXt:
  """SENet-154 (Hu et al., appendix; Gluon's weights are MEAL V2's teacher), 115,088,984 parameters
  with 1000 classes, as timm."""
  return SEResNeXt(**{**VARIANTS["senet154"], **kwargs})


@register_model
def resnet20(**kwargs) -> CifarResNet:
  """CIFAR ResNet-20 (269,722 parameters with 10 classes); `depth=32/44/56/110` gives the others."""
  return CifarResNet(**kwargs)
