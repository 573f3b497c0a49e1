"""VoVNet (one-shot aggregation) and VoVNetV2 / eSE-VoVNet.

Lee, Hwang, Lee, Bae, Park. "An Energy and GPU-Computation Efficient Backbone Network for Real-Time
Object Detection", CVPR Workshops 2019 (arXiv:1904.09730), Section 3 and Table 1 (VoVNet-39/57).
Lee, Park. "CenterMask: Real-Time Anchor-Free Instance Segmentation", CVPR 2020 (arXiv:1911.06667),
Section 2.3 (VoVNetV2: residual connection and effective Squeeze-Excitation).

One-shot aggregation (OSA) module: a chain of 3x3 conv-BN-ReLU layers whose outputs are all
concatenated once, with the module's input, at the end, and merged by a 1x1 conv-BN-ReLU (unlike
DenseNet, which concatenates at every layer). VoVNetV2 adds an identity shortcut (timm: every module
of a stage but the first, whose width changes) and eSE on the stage's last module: a channel gate
`x * hard_sigmoid(fc(mean(x)))` with a single 1x1 convolution. Stem: three 3x3 conv-BN-ReLU layers
(stride 2, 1, 2; depthwise-separable after the first in the `_dw` variant, which also reduces the
input of each OSA module with a 1x1 conv-BN-ReLU). Stages 2-4 begin with 3x3 stride-2 max pooling
in PyTorch's ceil mode.

Module names follow timm's `VovNet`, so `inception_zoo.convert` loads `vovnet*`/`ese_vovnet*` weights
by rule. One deliberate difference in training mode only: stochastic depth (`drop_path_rate`) drops
only residual branches; timm also zeroes the whole output of the non-residual first module of a stage.
"""
import functools
from typing import Any, Callable, Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import ConvBN, Seq, check_image, classifier_head, concat
from inception_zoo.layers.common import conv_init, drop_path, drop_path_rates
from inception_zoo.registry import register_model

# Smallest input whose stride-32 stage output (C5) is at least one pixel.
MIN_SIZE = 32


def max_pool_ceil(x, window: int = 3, stride: int = 2):
  """PyTorch `MaxPool2d(window, stride, ceil_mode=True)`: the last window may hang over the
  bottom/right edge (padded with -inf) when the size does not divide evenly."""
  pads = []
  for size in x.shape[1:3]:
    out = -(-(size - window) // stride) + 1
    pads.append((0, max(0, (out - 1) * stride + window - size)))
  return nn.max_pool(x, (window, window), (stride, stride), pads)


class SeparableConvBN(nn.Module):
  """3x3 depthwise convolution, 1x1 convolution, BN, ReLU (timm's SeparableConvNormAct)."""
  features: int
  strides: int = 1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train):
    c = x.shape[-1]
    x = nn.Conv(c, (3, 3), self.strides, padding=((1, 1), (1, 1)), feature_group_count=c,
                use_bias=False, kernel_init=conv_init, dtype=self.dtype, name="conv_dw")(x)
    x = nn.Conv(self.features, (1, 1), use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                name="conv_pw")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                     dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


class EffectiveSE(nn.Module):
  """eSE (CenterMask, Section 2.3): x * hard_sigmoid(W mean(x) + b), one full-width 1x1 convolution."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.Conv(x.shape[-1], (1, 1), dtype=self.dtype, name="fc")(s)
    return x * nn.hard_sigmoid(s)  # relu6(s + 3) / 6, PyTorch's Hardsigmoid


class OsaBlock(nn.Module):
  conv: Callable[..., nn.Module]  # conv-BN-ReLU factory (ConvBN)
  sep: Callable[..., nn.Module]  # depthwise-separable factory (SeparableConvBN)
  mid_chs: int
  out_chs: int
  layers: int
  residual: bool
  depthwise: bool
  attn: bool
  drop_path: float

  @nn.compact
  def __call__(self, x, *, train):
    shortcut = x
    if self.depthwise and x.shape[-1] != self.mid_chs:
      x = self.conv(self.mid_chs, 1, name="conv_reduction")(x, train=train)
    mids = [self.sep(self.mid_chs) if self.depthwise else self.conv(self.mid_chs, 3, padding=1)
            for _ in range(self.layers)]
    taps = tuple(range(self.layers))
    _, feats = Seq(mids, name="conv_mid")(x, train=train, capture=taps)
    x = concat([shortcut] + [feats[i] for i in taps])  # the one-shot aggregation
    x = self.conv(self.out_chs, 1, name="conv_concat")(x, train=train)
    if self.attn:
      x = EffectiveSE(dtype=x.dtype, name="attn")(x)
    if self.residual:
      x = shortcut + drop_path(self.drop_path, train)(x)
    return x


class OsaStage(nn.Module):
  conv: Callable[..., nn.Module]
  sep: Callable[..., nn.Module]
  mid_chs: int
  out_chs: int
  layers: int
  downsample: bool
  residual: bool
  depthwise: bool
  attn: bool
  drop_paths: Tuple[float, ...]  # one rate per OSA module

  @nn.compact
  def __call__(self, x, *, train):
    if self.downsample:
      x = max_pool_ceil(x)
    last = len(self.drop_paths) - 1
    blocks = [OsaBlock(self.conv, self.sep, self.mid_chs, self.out_chs, self.layers,
                       residual=self.residual and i > 0, depthwise=self.depthwise,
                       attn=self.attn and i == last, drop_path=rate)
              for i, rate in enumerate(self.drop_paths)]
    return Seq(blocks, name="blocks")(x, train=train)


class ClassifierHead(nn.Module):
  """timm's ClassifierHead: average pooling, dropout, Linear named `fc`."""
  num_classes: int
  drop_rate: float = 0.0

  @nn.compact
  def __call__(self, x, *, train):
    return classifier_head(x, num_classes=self.num_classes, drop_rate=self.drop_rate, name="fc",
                           train=train)


class VoVNet(nn.Module):
  """Returns `(logits, features)`: features holds C1 (the stem's second layer, stride 2), C2..C5
  (the four OSA stages, strides 4..32) and pre_logits."""
  num_classes: int = 1000
  stem_chs: Tuple[int, int, int] = (64, 64, 128)
  stage_conv_chs: Tuple[int, ...] = (128, 160, 192, 224)  # width of the 3x3 layers in each stage
  stage_out_chs: Tuple[int, ...] = (256, 512, 768, 1024)  # width after the aggregation 1x1
  layer_per_block: int = 5
  block_per_stage: Tuple[int, ...] = (1, 1, 2, 2)
  residual: bool = False
  depthwise: bool = False
  attn: str = ""  # '' or 'ese'
  drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  bn_momentum: float = 0.9  # PyTorch's 0.1
  dtype: Any = jnp.float32

  head_name = "head"  # timm's head module (weight conversion, head reset)
  timm_classifier = "head.fc"
  min_size = MIN_SIZE
  tiny_options = {"stem_chs": (8, 8, 16), "stage_conv_chs": (8, 8, 8, 8),
                  "stage_out_chs": (16, 16, 16, 16), "layer_per_block": 2,
                  "block_per_stage": (1, 1, 1, 2)}  # for fast tests of the code paths

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_image(x, "vovnet", MIN_SIZE)
    if self.attn not in ("", "ese"):
      raise UserError(f"vovnet attn must be '' or 'ese'; got '{self.attn}'")
    conv = functools.partial(ConvBN, bn_momentum=self.bn_momentum, bn_eps=1e-5, dtype=self.dtype)
    sep = functools.partial(SeparableConvBN, bn_momentum=self.bn_momentum, dtype=self.dtype)

    def stem_conv(c, stride):
      return sep(c, strides=stride) if self.depthwise else conv(c, 3, strides=stride, padding=1)

    s0, s1, s2 = self.stem_chs
    stem = [conv(s0, 3, strides=2, padding=1), stem_conv(s1, 1), stem_conv(s2, 2)]
    x, feats = Seq(stem, name="stem")(x.astype(self.dtype), train=train, capture=(1,))
    out = {"C1": feats[1]}
    rates = drop_path_rates(self.drop_path_rate, self.block_per_stage)
    stages = [OsaStage(conv, sep, self.stage_conv_chs[i], self.stage_out_chs[i],
                       self.layer_per_block, downsample=i > 0, residual=self.residual,
                       depthwise=self.depthwise, attn=self.attn == "ese", drop_paths=rates[i])
              for i in range(len(self.block_per_stage))]
    taps = tuple(range(len(stages)))
    x, feats = Seq(stages, name="stages")(x, train=train, capture=taps)
    out.update({f"C{i + 2}": feats[i] for i in taps})
    logits, out["pre_logits"] = ClassifierHead(self.num_classes, self.drop_rate, name="head")(
        x, train=train)
    return logits, out


_V1 = dict(stem_chs=(64, 64, 128), stage_conv_chs=(128, 160, 192, 224),
           stage_out_chs=(256, 512, 768, 1024), layer_per_block=5)
_V2 = dict(_V1, residual=True, attn="ese")
# VoVNet-39/57: Table 1 of the VoVNet paper; the eSE variants: CenterMask's VoVNetV2 as in timm.
VARIANTS = {
    "vovnet39a": dict(_V1, block_per_stage=(1, 1, 2, 2)),
    "vovnet57a": dict(_V1, block_per_stage=(1, 1, 4, 3)),
    "ese_vovnet19b_dw": dict(_V2, stem_chs=(64, 64, 64), layer_per_block=3,
                             block_per_stage=(1, 1, 1, 1), depthwise=True),
    "ese_vovnet39b": dict(_V2, block_per_stage=(1, 1, 2, 2)),
    "ese_vovnet57b": dict(_V2, block_per_stage=(1, 1, 4, 3)),
    "ese_vovnet99b": dict(_V2, block_per_stage=(1, 3, 9, 3)),
}


@register_model
def vovnet39a(**kwargs) -> VoVNet:
  """VoVNet-39 (22,600,296 parameters with 1000 classes, as timm)."""
  return VoVNet(**{**VARIANTS["vovnet39a"], **kwargs})


@register_model
def vovnet57a(**kwargs) -> VoVNet:
  """VoVNet-57 (36,640,296 parameters with 1000 classes, as timm)."""
  return VoVNet(**{**VARIANTS["vovnet57a"], **kwargs})


@register_model
def ese_vovnet19b_dw(**kwargs) -> VoVNet:
  """VoVNetV2-19 with depthwise-separable convolutions (6,543,080 parameters, as timm)."""
  return VoVNet(**{**VARIANTS["ese_vovnet19b_dw"], **kwargs})


@register_model
def ese_vovnet39b(**kwargs) -> VoVNet:
  """VoVNetV2-39 (24,568,936 parameters with 1000 classes, as timm)."""
  return VoVNet(**{**VARIANTS["ese_vovnet39b"], **kwargs})


@register_model
def ese_vovnet57b(**kwargs) -> VoVNet:
  """VoVNetV2-57 (38,608,936 parameters with 1000 classes, as timm)."""
  return VoVNet(**{**VARIANTS["ese_vovnet57b"], **kwargs})


@register_model
def ese_vovnet99b(**kwargs) -> VoVNet:
  """VoVNetV2-99 (63,199,272 parameters with 1000 classes, as timm)."""
  return VoVNet(**{**VARIANTS["ese_vovnet99b"], **kwargs})
