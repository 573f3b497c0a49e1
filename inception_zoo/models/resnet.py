"""ResNet (ImageNet and CIFAR layouts) and Wide ResNet-50-2.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385):
Section 3.3 and Table 1 (ImageNet ResNet-18/34/50/101/152, basic and bottleneck blocks, projection
shortcuts where the shape changes: option B), Section 4.2 (CIFAR-10 ResNet-20/32/44/56/110).
Zagoruyko, Komodakis. "Wide Residual Networks", BMVC 2016 (arXiv:1605.07146): widening the
bottleneck's inner 3x3 convolution (Wide ResNet-50-2: twice the inner width of ResNet-50).

ImageNet layout, `ResNet`: 7x7/2 convolution, BN, ReLU, 3x3/2 max pooling, four stages (layer1..4)
of basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 x4) blocks, the first block of stages 2-4 at
stride 2, global average pooling, linear classifier. It is timm's `ResNet`, module for module, so
`inception_zoo.convert` loads `resnet*` / `wide_resnet50_2` weights by rule; like timm (and
torchvision's "v1.5") the bottleneck strides in its 3x3 convolution, where the paper's Table 1
network strides in the first 1x1. The `s` variants (`resnet50s`, `resnet152s`: Gluon's ResNet-v1s,
MEAL V2's ResNet-152 teacher) replace the 7x7 stem by three 3x3 convolutions (64, 64, 128 channels).

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
from inception_zoo.layers import Seq, check_image
from inception_zoo.layers.common import conv_init, drop_path, drop_path_rates
from inception_zoo.models.inception_v4 import classifier_head
from inception_zoo.registry import register_model

# Smallest input whose stride-32 output (C5) is at least one pixel.
MIN_SIZE = 32


def conv(features: int, kernel: int, strides: int = 1, name: Optional[str] = None,
         dtype: Any = jnp.float32):
  """PyTorch `Conv2d(kernel, stride, padding=kernel // 2, bias=False)`."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides, padding=((pad, pad), (pad, pad)),
                 use_bias=False, kernel_init=conv_init, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions (Fig. 5 left); the first one strides."""
  norm: Callable[..., nn.Module]  # BatchNorm factory, takes `name` and `train`
  planes: int
  strides: int
  project: bool  # 1x1 convolution + BN on the shortcut (option B)
  drop_path: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train):
    shortcut = x
    y = conv(self.planes, 3, self.strides, name="conv1", dtype=self.dtype)(x)
    y = nn.relu(self.norm(name="bn1", train=train)(y))
    y = conv(self.planes, 3, name="conv2", dtype=self.dtype)(y)
    y = self.norm(name="bn2", train=train)(y)
    if self.project:
      shortcut = Projection(self.norm, self.planes, self.strides, self.dtype,
                            name="downsample")(x, train=train)
    return nn.relu(shortcut + drop_path(self.drop_path, train)(y))


class Bottleneck(nn.Module):
  """1x1 reduction, 3x3 (strided), 1x1 expansion to 4x `planes` (Fig. 5 right). `width` is the
  inner width: `planes` in the paper, `2 * planes` in Wide ResNet-50-2."""
  norm: Callable[..., nn.Module]
  planes: int
  width: int
  strides: int
  project: bool
  drop_path: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train):
    shortcut = x
    y = conv(self.width, 1, name="conv1", dtype=self.dtype)(x)
    y = nn.relu(self.norm(name="bn1", train=train)(y))
    y = conv(self.width, 3, self.strides, name="conv2", dtype=self.dtype)(y)
    y = nn.relu(self.norm(name="bn2", train=train)(y))
    y = conv(self.planes * 4, 1, name="conv3", dtype=self.dtype)(y)
    y = self.norm(name="bn3", train=train)(y)
    if self.project:
      shortcut = Projection(self.norm, self.planes * 4, self.strides, self.dtype,
                            name="downsample")(x, train=train)
    return nn.relu(shortcut + drop_path(self.drop_path, train)(y))


class Projection(nn.Module):
  """The projection shortcut, option B: strided 1x1 convolution and BN (timm's `downsample.0/.1`)."""
  norm: Callable[..., nn.Module]
  features: int
  strides: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train):
    x = conv(self.features, 1, self.strides, name="layers_0", dtype=self.dtype)(x)
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
  C2..C5 (layer1..layer4, strides 4..32) and pre_logits."""
  num_classes: int = 1000
  block: str = "bottleneck"  # 'basic' | 'bottleneck'
  layers: Tuple[int, ...] = (3, 4, 6, 3)  # blocks per stage (Table 1)
  channels: Tuple[int, ...] = (64, 128, 256, 512)  # `planes` of each stage
  base_width: int = 64  # bottleneck inner width = planes * base_width / 64 (128: Wide ResNet-x-2)
  stem_type: str = ""  # '' (7x7) | 'deep' (three 3x3)
  stem_width: int = 64  # 7x7 width; for 'deep', the first two 3x3 widths (the third is twice it)
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  bn_momentum: float = 0.9  # PyTorch's 0.1
  dtype: Any = jnp.float32

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
    if len(self.layers) != len(self.channels):
      raise UserError(f"resnet has {len(self.layers)} stages in `layers` but "
                      f"{len(self.channels)} in `channels`")
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
    for i, planes in enumerate(self.channels):
      if self.block == "basic":
        make, out_chs = functools.partial(BasicBlock, norm, planes), planes
      else:
        make = functools.partial(Bottleneck, norm, planes, planes * self.base_width // 64)
        out_chs = 4 * planes
      blocks = []
      for j, rate in enumerate(rates[i]):
        strides = 2 if i > 0 and j == 0 else 1
        project = j == 0 and (strides != 1 or x.shape[-1] != out_chs)
        blocks.append(make(strides, project, rate, self.dtype))
      x = Seq(blocks, name=f"layer{i + 1}")(x, train=train)
      out[f"C{i + 2}"] = x
    logits, out["pre_logits"] = classifier_head(x, num_classes=self.num_classes, train=train,
                                                drop_rate=self.drop_rate, name="fc")
    return logits, out


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
def resnet20(**kwargs) -> CifarResNet:
  """CIFAR ResNet-20 (269,722 parameters with 10 classes); `depth=32/44/56/110` gives the others."""
  return CifarResNet(**kwargs)
