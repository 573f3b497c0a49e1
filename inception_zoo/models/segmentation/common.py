"""Pieces the segmentation models share: convolution + BatchNorm units named as the PyTorch code they follow,
the initialisers of each codebase, the FCN auxiliary head and the registry's backbone helper.

Names follow the reference modules, so their state dicts convert by the timm rule of `inception_zoo.convert`
(`layers_<i>` <-> `.<i>.`): a PyTorch `nn.Sequential(conv, BN, ReLU, ...)` is a `ConvBNSeq` with the convolution
at `layers_<3i + first>` and its BN at the next index (ReLUs and dropouts hold the indices between), an mmcv
`ConvModule` is a `ConvModule` (`conv`, `bn`). BatchNorm everywhere: eps 1e-5, Flax momentum 0.9 (PyTorch's 0.1).
"""
from typing import Any, Callable, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.layers import Seq
from inception_zoo.registry import create_model, list_models, model_options

# nn.init.kaiming_normal_(w) / (w, mode='fan_in', nonlinearity='relu'): N(0, 2 / fan_in), not truncated. VainF's
# DeepLabV3+ head (`_init_weight`) and the CPS / MGD heads (`init_weight(..., kaiming_normal_, mode='fan_in')`).
kaiming_normal_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# mmcv's `kaiming_init` (ConvModule's default): N(0, 2 / fan_out), fan_out = out channels x kernel area.
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's Conv2d default (kaiming_uniform_(a=sqrt(5))): U(-1/sqrt(fan_in), 1/sqrt(fan_in)); torchvision's
# segmentation heads keep it.
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# mmseg's `conv_seg` (BaseDecodeHead's init_cfg: Normal, std 0.01, bias 0).
normal_001 = nn.initializers.normal(0.01)


def torch_default_bias(fan_in: int) -> Callable:
  """PyTorch's Conv2d bias default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in = in channels x kernel area)."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def conv2d(features: int, kernel: int = 1, *, dilation: int = 1, bias: bool = False,
           kernel_init: Callable = torch_default_kernel, bias_init: Callable = nn.initializers.zeros,
           dtype: Any = jnp.float32, name: Optional[str] = None) -> nn.Conv:
  """PyTorch `Conv2d(kernel, padding=dilation * (kernel // 2), dilation, bias)`."""
  pad = dilation * (kernel // 2)
  return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                 use_bias=bias, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype, name=name)


def batch_norm(momentum: float, dtype: Any, train: bool, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype, name=name)


def classifier_conv(num_classes: int, fan_in: int, init: str, dtype: Any, name: Optional[str] = None) -> nn.Conv:
  """The final 1x1 convolution to class logits (with bias), initialised as `init` ('torch' default, 'kaiming' as
  VainF / CPS: the kernel N(0, 2 / fan_in), the bias PyTorch's default; 'mmseg': N(0, 0.01^2), bias 0)."""
  if init == "mmseg":
    return conv2d(num_classes, 1, bias=True, kernel_init=normal_001, dtype=dtype, name=name)
  kernel = kaiming_normal_fan_in if init == "kaiming" else torch_default_kernel
  return conv2d(num_classes, 1, bias=True, kernel_init=kernel, bias_init=torch_default_bias(fan_in), dtype=dtype,
                name=name)


class ConvBNSeq(nn.Module):
  """`convs` x (conv without bias, BN, activation), then dropout, then an optional 1x1 classifier with bias, named
  as a PyTorch nn.Sequential: conv i at `layers_<first + 3i>`, its BN at the next index, the classifier after the
  activations (and after the dropout's index when there is a dropout)."""
  features: int
  kernel: int = 3
  convs: int = 1
  dilation: int = 1
  first: int = 0  # index of the first convolution (1 after torchvision's ASPPPooling's pooling, or after `pre`)
  pre: Optional[nn.Module] = None  # a module at index 0 before the convolutions (torchvision's DeepLabHead: the ASPP)
  act: Callable = nn.relu
  dropout: float = 0.0
  num_classes: int = 0  # 0: no classifier
  weight_init: str = "torch"  # 'torch' | 'kaiming' (see `classifier_conv`)
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    kernel_init = kaiming_normal_fan_in if self.weight_init == "kaiming" else torch_default_kernel
    if self.pre is not None:
      x = self.pre.clone(parent=self, name="layers_0")(x, train=train)
    index = self.first
    for _ in range(self.convs):
      x = conv2d(self.features, self.kernel, dilation=self.dilation, kernel_init=kernel_init, dtype=self.dtype,
                 name=f"layers_{index}")(x)
      x = self.act(batch_norm(self.bn_momentum, self.dtype, train, f"layers_{index + 1}")(x))
      index += 3
    if self.dropout:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      index += 1
    if self.num_classes:
      x = classifier_conv(self.num_classes, x.shape[-1], self.weight_init, self.dtype, f"layers_{index}")(x)
    return x


class ConvModule(nn.Module):
  """mmcv's ConvModule with a BN and a ReLU: `conv` (no bias; Kaiming-normal over fan_out as mmcv's
  `kaiming_init`), `bn`."""
  features: int
  kernel: int = 3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = conv2d(self.features, self.kernel, kernel_init=kaiming_normal_fan_out, dtype=self.dtype, name="conv")(x)
    return nn.relu(batch_norm(self.bn_momentum, self.dtype, train, "bn")(x))


class MMSegFCNHead(nn.Module):
  """mmseg's FCNHead with one convolution (its auxiliary head): `convs/layers_0` (ConvModule 3x3), Dropout2d,
  `conv_seg`."""
  num_classes: int
  channels: int = 256
  dropout: float = 0.1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = Seq([ConvModule(self.channels, 3, self.bn_momentum, self.dtype)], name="convs")(x, train=train)
    # nn.Dropout2d: whole channels of an example are dropped.
    x = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
    return classifier_conv(self.num_classes, x.shape[-1], "mmseg", self.dtype, "conv_seg")(x)


def fcn_head(style: str, num_classes: int, channels: int, bn_momentum: float, dtype: Any,
             name: Optional[str] = None) -> nn.Module:
  """The FCN auxiliary head on C4: 3x3 conv to `channels` + BN + ReLU, dropout 0.1, 1x1 conv to the classes, as
  torchvision's FCNHead (`style='torchvision'`: an nn.Sequential, indices 0, 1, 4; default init; element dropout) or
  mmseg's (`'mmseg'`: `convs.0`, `conv_seg`; mmcv init; channel dropout)."""
  if style == "mmseg":
    return MMSegFCNHead(num_classes, channels, 0.1, bn_momentum, dtype, name=name)
  return ConvBNSeq(channels, 3, dropout=0.1, num_classes=num_classes, bn_momentum=bn_momentum, dtype=dtype,
                   name=name)


def has_option(body: str, option: str) -> bool:
  """Whether the registered model `body` takes `option` (False for an unknown name: `make_body` reports it)."""
  return body in list_models() and option in model_options(body)


def make_body(body: str, options: Optional[Dict[str, Any]], model: str, **fixed) -> nn.Module:
  """A registered classifier without its classifier (`num_classes=0`), with `fixed` options over `options`;
  one-line error when `options` sets one of those to another value."""
  options = dict(options or {})
  clash = sorted(k for k in fixed if k in options and options[k] != fixed[k])
  if clash:
    raise UserError(f"{model} sets its backbone's {clash[0]} to {fixed[clash[0]]!r}; body_options cannot change it "
                    f"(got {options[clash[0]]!r})")
  return create_model(body, **{**options, "num_classes": 0, **fixed})
