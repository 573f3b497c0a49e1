"""Inception-ResNet-v1 and Inception-ResNet-v2.

Szegedy, Ioffe, Vanhoucke, Alemi. "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", AAAI 2017 (arXiv:1602.07261), Figures 10-20 and Table 1.

Each residual block concatenates its Inception branches, expands them back to the input width with a
linear 1x1 convolution (no batch norm: "batch-normalization only on top of the traditional layers, but
not on top of the summations"), scales that residual by a factor in 0.1-0.3 (Fig. 20) and adds it to
the input before a ReLU.

Three registered layouts:
- `inception_resnet_v2`: the released TF-slim network that timm ports (55,843,464 parameters with
  1000 classes): the Inception-v3-style stem ending in Mixed_5b (320 channels), 10x Block35 (scale
  0.17), 20x Block17 (0.10), 10x Block8 (0.20; the last without ReLU), a 1x1 convolution to 1536.
- `inception_resnet_v2_paper`: Fig. 15 with the Inception-v4 stem (Fig. 3, 384 channels) and
  5x A / 10x B / 5x C. The figures' residual widths (1154 in Fig. 17, 2048 in Fig. 19) cannot be added
  to their inputs (1152 and 2144 channels); the linear expansion here always matches the input width.
- `inception_resnet_v1`: Fig. 15 with the v1 stem (Fig. 14) and the v1 blocks (Figs. 10-13).
The paper gives no per-block scales for the figure layouts; they default to TF-slim's, and block
counts and scales are options of every layout.
"""
import functools
from typing import Any, Callable, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.layers import ConvBN, Pool, Seq, check_image, classifier_head, concat, conv_init, scaled
from inception_zoo.models.inception_v4 import MIN_SIZE, ReductionA, stem_v4
from inception_zoo.registry import register_model


class Mixed5b(nn.Module):
  """End of the TF-slim stem (Inception-v3's first Inception module): 192 -> 320 channels."""
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    return concat([
        conv(c(96), 1, name="branch0")(x, train=train),
        Seq([conv(c(48), 1), conv(c(64), 5, padding=2)], name="branch1")(x, train=train),
        Seq([conv(c(64), 1), conv(c(96), 3, padding=1), conv(c(96), 3, padding=1)],
            name="branch2")(x, train=train),
        Seq([Pool("avg", padding=1), conv(c(64), 1)], name="branch3")(x, train=train),
    ])


def stem_tfslim(conv, c):
  """The released network's stem, 299x299x3 -> 35x35x320 (timm's module names)."""
  return [conv(c(32), 3, strides=2, name="conv2d_1a"), conv(c(32), 3, name="conv2d_2a"),
          conv(c(64), 3, padding=1, name="conv2d_2b"), Pool("max", strides=2, name="maxpool_3a"),
          conv(c(80), 1, name="conv2d_3b"), conv(c(192), 3, name="conv2d_4a"),
          Pool("max", strides=2, name="maxpool_5a"), Mixed5b(conv, c, name="mixed_5b")]


def stem_v1(conv, c):
  """Fig. 14: 299x299x3 -> 35x35x256."""
  return [conv(c(32), 3, strides=2), conv(c(32), 3), conv(c(64), 3, padding=1),
          Pool("max", strides=2), conv(c(80), 1), conv(c(192), 3), conv(c(256), 3, strides=2)]


class Residual(nn.Module):
  """Inception-ResNet block: x + scale * Linear1x1(concat(branches(x))), then ReLU (optional)."""
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]
  # branch widths: the first branch is a single 1x1 conv, each later tuple a chain whose first conv
  # is 1x1 and whose later kernels are `kernels[i]`.
  widths: Tuple[Any, ...]
  kernels: Tuple[Any, ...]
  scale: float
  relu: bool = True

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    branches = [conv(c(self.widths[0]), 1, name="branch0")(x, train=train)]
    for i, (chain, kernels) in enumerate(zip(self.widths[1:], self.kernels), start=1):
      layers = [conv(c(chain[0]), 1)]
      layers += [conv(c(w), k, padding=tuple(s // 2 for s in k)) for w, k in zip(chain[1:], kernels)]
      branches.append(Seq(layers, name=f"branch{i}")(x, train=train))
    up = nn.Conv(x.shape[-1], (1, 1), kernel_init=conv_init, dtype=x.dtype,
                 name="conv2d")(concat(branches))
    x = x + self.scale * up
    return nn.relu(x) if self.relu else x


class ReductionB(nn.Module):
  """Fig. 12 (v1) / Fig. 18 (v2): max pool beside three 1x1 -> stride-2 3x3 branches."""
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]
  widths: Tuple[int, int, int, int]  # branch0 3x3, branch1 3x3, branch2 3x3 (middle), branch2 3x3 (out)

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    w0, w1, w2a, w2b = self.widths
    return concat([
        Seq([conv(c(256), 1), conv(c(w0), 3, strides=2)], name="branch0")(x, train=train),
        Seq([conv(c(256), 1), conv(c(w1), 3, strides=2)], name="branch1")(x, train=train),
        Seq([conv(c(256), 1), conv(c(w2a), 3, padding=1), conv(c(w2b), 3, strides=2)],
            name="branch2")(x, train=train),
        Pool("max", strides=2, name="branch3")(x),
    ])


# Per-version filter counts (Figs. 10-13 for v1, 16-19 for v2; Reduction-A from Table 1).
_SQUARE3, _H7, _V7, _H3, _V3 = (3, 3), (1, 7), (7, 1), (1, 3), (3, 1)
VERSIONS = {
    "v1": dict(block_a=(32, (32, 32), (32, 32, 32)), block_b=(128, (128, 128, 128)),
               block_c=(192, (192, 192, 192)), reduction_a=(192, 192, 256, 384),
               reduction_b=(384, 256, 256, 256)),
    "v2": dict(block_a=(32, (32, 32), (32, 48, 64)), block_b=(192, (128, 160, 192)),
               block_c=(192, (192, 224, 256)), reduction_a=(256, 256, 384, 384),
               reduction_b=(384, 288, 288, 320)),
}
KERNELS_A, KERNELS_B, KERNELS_C = ((_SQUARE3,), (_SQUARE3, _SQUARE3)), ((_H7, _V7),), ((_H3, _V3),)


class InceptionResNet(nn.Module):
  """Returns `(logits, features)`: features holds C1..C5 (nominal strides 2..32) and pre_logits."""
  version: str = "v2"        # block widths: 'v1' | 'v2'
  stem: str = "tfslim"       # 'tfslim' (released v2) | 'v4' (paper's v2) | 'v1' (paper's v1)
  depths: Sequence[int] = (10, 20, 10)
  scales: Sequence[float] = (0.17, 0.10, 0.20)
  last_relu: bool = False    # TF-slim drops the ReLU after the last Block8
  final_conv: int = 1536     # TF-slim's 1x1 conv2d_7b before pooling; 0 = none (the figures)
  num_classes: int = 1000
  width: float = 1.0
  drop_rate: float = 0.2     # "Dropout (keep 0.8)"
  bn_momentum: float = 0.9997
  dtype: Any = jnp.float32

  head_name = "classif"  # timm's classifier name (weight conversion, head reset)
  min_size = MIN_SIZE
  tiny_options = {"width": 1 / 16, "depths": (1, 1, 1)}  # for fast tests of the code paths

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_image(x, f"inception_resnet_{self.version}", MIN_SIZE)
    conv = functools.partial(ConvBN, bn_momentum=self.bn_momentum, dtype=self.dtype)
    c, spec = scaled(self.width), VERSIONS[self.version]
    out = {}
    x = x.astype(self.dtype)
    if self.stem == "tfslim":
      taps = {"conv2d_2b": "C1", "conv2d_4a": "C2"}
      for layer in stem_tfslim(conv, c):
        x = layer(x, train=train)
        if layer.name in taps:
          out[taps[layer.name]] = x
    else:
      stem = stem_v4(conv, c) if self.stem == "v4" else stem_v1(conv, c)
      c1_c2 = (2, 3) if self.stem == "v4" else (2, 5)
      x, feats = Seq(stem, name="stem")(x, train=train, capture=c1_c2)
      out.update(C1=feats[c1_c2[0]], C2=feats[c1_c2[1]])

    def repeat(n, scale, widths, kernels, name, last_relu=True):
      blocks = [Residual(conv, c, widths, kernels, scale, relu=last_relu or i < n - 1)
                for i in range(n)]
      return Seq(blocks, name=name)(x, train=train)

    n_a, n_b, n_c = self.depths
    s_a, s_b, s_c = self.scales
    x = out["C3"] = repeat(n_a, s_a, spec["block_a"], KERNELS_A, "repeat")
    x = ReductionA(conv, c, spec["reduction_a"], name="mixed_6a")(x, train=train)
    x = out["C4"] = repeat(n_b, s_b, spec["block_b"], KERNELS_B, "repeat_1")
    x = ReductionB(conv, c, spec["reduction_b"], name="mixed_7a")(x, train=train)
    if self.last_relu:
      x = repeat(n_c, s_c, spec["block_c"], KERNELS_C, "repeat_2")
    else:  # TF-slim layout: the ReLU-free last block is a module of its own (timm: `block8`)
      x = repeat(n_c - 1, s_c, spec["block_c"], KERNELS_C, "repeat_2")
      x = Residual(conv, c, spec["block_c"], KERNELS_C, 1.0, relu=False, name="block8")(
          x, train=train)
    if self.final_conv:
      x = conv(c(self.final_conv), 1, name="conv2d_7b")(x, train=train)
    out["C5"] = x
    logits, out["pre_logits"] = classifier_head(x, num_classes=self.num_classes, train=train,
                                                drop_rate=self.drop_rate, name="classif")
    return logits, out


@register_model
def inception_resnet_v2(**kwargs) -> InceptionResNet:
  """The released Inception-ResNet-v2 (TF-slim layout, timm `inception_resnet_v2`)."""
  return InceptionResNet(**kwargs)


@register_model
def inception_resnet_v2_paper(**kwargs) -> InceptionResNet:
  """Inception-ResNet-v2 as drawn in the paper: Inception-v4 stem, 5/10/5 blocks, no final 1x1."""
  kwargs = dict(version="v2", stem="v4", depths=(5, 10, 5), last_relu=True, final_conv=0) | kwargs
  return InceptionResNet(**kwargs)


@register_model
def inception_resnet_v1(**kwargs) -> InceptionResNet:
  """Inception-ResNet-v1 as drawn in the paper (Figs. 10-15)."""
  kwargs = dict(version="v1", stem="v1", depths=(5, 10, 5), last_relu=True, final_conv=0) | kwargs
  return InceptionResNet(**kwargs)
