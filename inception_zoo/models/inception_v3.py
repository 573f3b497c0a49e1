"""Inception-v3.

Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016 (arXiv:1512.00567), Section 6 and Table 1 (the network), Figures 5-7 (modules),
Figure 10 (grid-size reduction), Section 4 (auxiliary classifier).

299x299x3 -> stem of 3x3 convolutions and max pooling (Conv2d_1a .. Conv2d_4a, 35x35x192) ->
3x Inception at 35x35 (Mixed_5b-d, Fig. 5) -> reduction (Mixed_6a, Fig. 10) -> 4x Inception with
factorised 1x7 / 7x1 convolutions at 17x17 (Mixed_6b-e, Fig. 6; 128, 160, 160, 192 inner channels)
-> reduction (Mixed_7a) -> 2x Inception with expanded 1x3 / 3x1 filter banks at 8x8 (Mixed_7b-c,
Fig. 7) -> average pooling -> dropout -> linear classifier. Every convolution is conv-BN-ReLU
(BN eps 1e-3); padding-free ("valid") unless the module keeps the grid size.

Where the paper and the released network differ we follow the released TF-slim network that
torchvision and timm port (whose weights exist): the 35x35 modules keep a 5x5 branch beside the
double 3x3 one (Fig. 5 replaces it), the stem ends in a 1x1 convolution to 80 channels, a 3x3 to
192 and max pooling (Table 1: 3x3 to 80, strided 3x3 to 192, 3x3 to 288), and there are four 17x17
modules (Table 1: five). Module names
and the 3x3 average pooling of the pool branches (zero padding counted in the mean, PyTorch's default;
TF-slim's 'SAME' pooling excludes it) are timm's `inception_v3`, so `inception_zoo.convert` loads its
weights by rule. Like timm's default, the auxiliary classifier on the last 17x17 grid is off
(23,834,568 parameters with 1000 classes); `aux_logits=True` adds it (27,161,264, torchvision's
layout: 5x5/3 average pooling, 1x1 conv to 128, 5x5 conv to 768, linear) and returns its logits in
the features as `aux_logits`; it needs the paper's 299 px input for its 5x5 grid. `depths` keeps
only the first modules of each grid (for small test models; names stay the released network's).
"""
import functools
from typing import Any, Callable, Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import ConvBN, Pool, check_image, classifier_head, concat, scaled
from inception_zoo.registry import register_model

# Smallest input the valid-padded stem and reductions accept (Mixed_7a then leaves one pixel).
MIN_SIZE = 75
AUX_MIN_SIZE = 299  # the auxiliary classifier's 5x5 convolution needs a 17x17 Mixed_6e grid
# The released network's modules per grid: (name, pool-branch width) at 35x35, (name, 7x7 inner width)
# at 17x17, names at 8x8.
MODULES_35 = (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64))
MODULES_17 = (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192))
MODULES_8 = ("Mixed_7b", "Mixed_7c")


def avg_pool_3x3(x):
  """PyTorch's `avg_pool2d(x, 3, stride=1, padding=1)`: zero padding counts in the mean."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=True)


class InceptionA(nn.Module):
  """35x35 module (Fig. 5 with the released network's 5x5 branch)."""
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]
  pool_features: int

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    b5 = conv(c(48), 1, name="branch5x5_1")(x, train=train)
    b3 = conv(c(64), 1, name="branch3x3dbl_1")(x, train=train)
    b3 = conv(c(96), 3, padding=1, name="branch3x3dbl_2")(b3, train=train)
    return concat([
        conv(c(64), 1, name="branch1x1")(x, train=train),
        conv(c(64), 5, padding=2, name="branch5x5_2")(b5, train=train),
        conv(c(96), 3, padding=1, name="branch3x3dbl_3")(b3, train=train),
        conv(c(self.pool_features), 1, name="branch_pool")(avg_pool_3x3(x), train=train),
    ])


class InceptionB(nn.Module):
  """35x35 -> 17x17 reduction (Fig. 10): strided convolutions beside max pooling."""
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    b3 = conv(c(64), 1, name="branch3x3dbl_1")(x, train=train)
    b3 = conv(c(96), 3, padding=1, name="branch3x3dbl_2")(b3, train=train)
    return concat([
        conv(c(384), 3, strides=2, name="branch3x3")(x, train=train),
        conv(c(96), 3, strides=2, name="branch3x3dbl_3")(b3, train=train),
        Pool("max", strides=2)(x),
    ])


class InceptionC(nn.Module):
  """17x17 module with 7x7 convolutions factorised into 1x7 and 7x1 (Fig. 6, n = 7)."""
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]
  c7: int

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    h7, v7 = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
    b7 = conv(c(self.c7), 1, name="branch7x7_1")(x, train=train)
    b7 = conv(c(self.c7), **h7, name="branch7x7_2")(b7, train=train)
    b7 = conv(c(192), **v7, name="branch7x7_3")(b7, train=train)
    d7 = conv(c(self.c7), 1, name="branch7x7dbl_1")(x, train=train)
    d7 = conv(c(self.c7), **v7, name="branch7x7dbl_2")(d7, train=train)
    d7 = conv(c(self.c7), **h7, name="branch7x7dbl_3")(d7, train=train)
    d7 = conv(c(self.c7), **v7, name="branch7x7dbl_4")(d7, train=train)
    d7 = conv(c(192), **h7, name="branch7x7dbl_5")(d7, train=train)
    return concat([
        conv(c(192), 1, name="branch1x1")(x, train=train), b7, d7,
        conv(c(192), 1, name="branch_pool")(avg_pool_3x3(x), train=train),
    ])


class InceptionD(nn.Module):
  """17x17 -> 8x8 reduction."""
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    b3 = conv(c(192), 1, name="branch3x3_1")(x, train=train)
    b7 = conv(c(192), 1, name="branch7x7x3_1")(x, train=train)
    b7 = conv(c(192), (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7, train=train)
    b7 = conv(c(192), (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7, train=train)
    return concat([
        conv(c(320), 3, strides=2, name="branch3x3_2")(b3, train=train),
        conv(c(192), 3, strides=2, name="branch7x7x3_4")(b7, train=train),
        Pool("max", strides=2)(x),
    ])


class InceptionE(nn.Module):
  """8x8 module with expanded filter banks: 1x3 and 3x1 side by side (Fig. 7)."""
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    h3, v3 = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
    b3 = conv(c(384), 1, name="branch3x3_1")(x, train=train)
    d3 = conv(c(448), 1, name="branch3x3dbl_1")(x, train=train)
    d3 = conv(c(384), 3, padding=1, name="branch3x3dbl_2")(d3, train=train)
    return concat([
        conv(c(320), 1, name="branch1x1")(x, train=train),
        conv(c(384), **h3, name="branch3x3_2a")(b3, train=train),
        conv(c(384), **v3, name="branch3x3_2b")(b3, train=train),
        conv(c(384), **h3, name="branch3x3dbl_3a")(d3, train=train),
        conv(c(384), **v3, name="branch3x3dbl_3b")(d3, train=train),
        conv(c(192), 1, name="branch_pool")(avg_pool_3x3(x), train=train),
    ])


class InceptionAux(nn.Module):
  """Auxiliary classifier on the 17x17 grid (Section 4; torchvision's layout, no BN on the linear)."""
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]
  num_classes: int

  @nn.compact
  def __call__(self, x, *, train):
    x = nn.avg_pool(x, (5, 5), (3, 3))
    x = self.conv(self.c(128), 1, name="conv0")(x, train=train)
    x = self.conv(self.c(768), 5, name="conv1")(x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    if self.num_classes == 0:  # headless, as the main classifier: the pooled features
      return x
    return nn.Dense(self.num_classes, dtype=x.dtype, name="fc")(x)


class InceptionV3(nn.Module):
  """Returns `(logits, features)`: features holds C1..C5 (timm's feature taps Conv2d_2b_3x3,
  Conv2d_4a_3x3 and the last module of each grid, Mixed_5d, Mixed_6e, Mixed_7c at full depth; nominal
  strides 2..32), pre_logits, and with `aux_logits` the auxiliary classifier's logits."""
  num_classes: int = 1000
  width: float = 1.0
  depths: Tuple[int, int, int] = (3, 4, 2)  # the first modules kept at 35x35, 17x17, 8x8
  aux_logits: bool = False
  drop_rate: float = 0.2  # TF-slim's dropout (keep 0.8) before the classifier
  bn_momentum: float = 0.9997  # TF-slim's Inception batch-norm decay
  dtype: Any = jnp.float32

  head_name = "fc"  # timm's classifier (weight conversion, head reset; the aux `fc` resets too)
  min_size = MIN_SIZE
  tiny_options = {"width": 1 / 16, "depths": (1, 1, 1)}  # for fast tests of the code paths

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_image(x, "inception_v3", AUX_MIN_SIZE if self.aux_logits else MIN_SIZE)
    full = (len(MODULES_35), len(MODULES_17), len(MODULES_8))
    if len(self.depths) != 3 or not all(1 <= d <= f for d, f in zip(self.depths, full)):
      raise UserError(f"inception_v3 depths (modules at 35x35, 17x17, 8x8) must be between (1, 1, 1) "
                      f"and {full}; got {tuple(self.depths)}")
    n35, n17, n8 = self.depths
    conv = functools.partial(ConvBN, bn_momentum=self.bn_momentum, bn_eps=1e-3, dtype=self.dtype)
    c = scaled(self.width)
    out = {}
    x = conv(c(32), 3, strides=2, name="Conv2d_1a_3x3")(x.astype(self.dtype), train=train)
    x = conv(c(32), 3, name="Conv2d_2a_3x3")(x, train=train)
    x = out["C1"] = conv(c(64), 3, padding=1, name="Conv2d_2b_3x3")(x, train=train)
    x = Pool("max", strides=2)(x)
    x = conv(c(80), 1, name="Conv2d_3b_1x1")(x, train=train)
    x = out["C2"] = conv(c(192), 3, name="Conv2d_4a_3x3")(x, train=train)
    x = Pool("max", strides=2)(x)
    for name, pool_features in MODULES_35[:n35]:
      x = InceptionA(conv, c, pool_features, name=name)(x, train=train)
    out["C3"] = x
    x = InceptionB(conv, c, name="Mixed_6a")(x, train=train)
    for name, c7 in MODULES_17[:n17]:
      x = InceptionC(conv, c, c7, name=name)(x, train=train)
    out["C4"] = x
    if self.aux_logits:
      out["aux_logits"] = InceptionAux(conv, c, self.num_classes, name="AuxLogits")(x, train=train)
    x = InceptionD(conv, c, name="Mixed_7a")(x, train=train)
    for name in MODULES_8[:n8]:
      x = InceptionE(conv, c, name=name)(x, train=train)
    out["C5"] = x
    logits, out["pre_logits"] = classifier_head(x, num_classes=self.num_classes, train=train,
                                                drop_rate=self.drop_rate, name="fc")
    return logits, out


@register_model
def inception_v3(**kwargs) -> InceptionV3:
  """Inception-v3 as released (23,834,568 parameters with 1000 classes, as timm)."""
  return InceptionV3(**kwargs)
