"""Inception-v4.

Szegedy, Ioffe, Vanhoucke, Alemi. "Inception-v4, Inception-ResNet and the Impact of Residual
Connections on Learning", AAAI 2017 (arXiv:1602.07261), Figures 3-9.

Stem (Fig. 3) -> 4x Inception-A (Fig. 4) -> Reduction-A (Fig. 7, k,l,m,n = 192,224,256,384) ->
7x Inception-B (Fig. 5) -> Reduction-B (Fig. 8) -> 3x Inception-C (Fig. 6) -> average pooling ->
dropout (keep 0.8) -> linear classifier. Convolutions marked "V" in the figures are valid-padded
(`padding=0`), the rest keep the spatial size.

Where a figure is ambiguous we follow the released TF-slim model (which timm ports and whose weights
exist): the factorised 7x7 and 3x3 convolutions are ordered 1x7 before 7x1 (Fig. 3 draws 7x1 first),
with "1x7" meaning a kernel one pixel high and seven wide. Module names follow timm's, so
`inception_zoo.convert` loads a timm checkpoint without a table.
"""
import functools
from typing import Any, Callable, Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.layers import ConvBN, Pool, Seq, check_image, classifier_head, concat, scaled
from inception_zoo.registry import register_model

# Smallest input the valid-padded stem and reductions accept (299 is the paper's resolution).
MIN_SIZE = 75


class Mixed3a(nn.Module):
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    return concat([Pool("max", strides=2, name="maxpool")(x),
                   self.conv(self.c(96), 3, strides=2, name="conv")(x, train=train)])


class Mixed4a(nn.Module):
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    x0 = Seq([conv(c(64), 1), conv(c(96), 3)], name="branch0")(x, train=train)
    x1 = Seq([conv(c(64), 1),
              conv(c(64), (1, 7), padding=(0, 3)),
              conv(c(64), (7, 1), padding=(3, 0)),
              conv(c(96), 3)], name="branch1")(x, train=train)
    return concat([x0, x1])


class Mixed5a(nn.Module):
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    return concat([self.conv(self.c(192), 3, strides=2, name="conv")(x, train=train),
                   Pool("max", strides=2, name="maxpool")(x)])


def stem_v4(conv, c):
  """Fig. 3: 299x299x3 -> 35x35x384. Also the stem of the paper's Inception-ResNet-v2."""
  return [conv(c(32), 3, strides=2), conv(c(32), 3), conv(c(64), 3, padding=1),
          Mixed3a(conv, c), Mixed4a(conv, c), Mixed5a(conv, c)]


class InceptionA(nn.Module):
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    return concat([
        conv(c(96), 1, name="branch0")(x, train=train),
        Seq([conv(c(64), 1), conv(c(96), 3, padding=1)], name="branch1")(x, train=train),
        Seq([conv(c(64), 1), conv(c(96), 3, padding=1), conv(c(96), 3, padding=1)],
            name="branch2")(x, train=train),
        Seq([Pool("avg", padding=1), conv(c(96), 1)], name="branch3")(x, train=train),
    ])


class ReductionA(nn.Module):
  """Fig. 7, shared by all three networks; filter counts (k, l, m, n) come from Table 1."""
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]
  klmn: Tuple[int, int, int, int]

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    k, l, m, n = self.klmn  # noqa: E741  (the paper's names, Table 1)
    return concat([
        conv(c(n), 3, strides=2, name="branch0")(x, train=train),
        Seq([conv(c(k), 1), conv(c(l), 3, padding=1), conv(c(m), 3, strides=2)],
            name="branch1")(x, train=train),
        Pool("max", strides=2, name="branch2")(x),
    ])


class InceptionB(nn.Module):
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    h7, v7 = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
    return concat([
        conv(c(384), 1, name="branch0")(x, train=train),
        Seq([conv(c(192), 1), conv(c(224), **h7), conv(c(256), **v7)],
            name="branch1")(x, train=train),
        Seq([conv(c(192), 1), conv(c(192), **v7), conv(c(224), **h7), conv(c(224), **v7),
             conv(c(256), **h7)], name="branch2")(x, train=train),
        Seq([Pool("avg", padding=1), conv(c(128), 1)], name="branch3")(x, train=train),
    ])


class ReductionB(nn.Module):
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    return concat([
        Seq([conv(c(192), 1), conv(c(192), 3, strides=2)], name="branch0")(x, train=train),
        Seq([conv(c(256), 1), conv(c(256), (1, 7), padding=(0, 3)),
             conv(c(320), (7, 1), padding=(3, 0)), conv(c(320), 3, strides=2)],
            name="branch1")(x, train=train),
        Pool("max", strides=2, name="branch2")(x),
    ])


class InceptionC(nn.Module):
  conv: Callable[..., nn.Module]
  c: Callable[[int], int]

  @nn.compact
  def __call__(self, x, *, train):
    conv, c = self.conv, self.c
    h3, v3 = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
    x1 = conv(c(384), 1, name="branch1_0")(x, train=train)
    x2 = conv(c(384), 1, name="branch2_0")(x, train=train)
    x2 = conv(c(448), **v3, name="branch2_1")(x2, train=train)
    x2 = conv(c(512), **h3, name="branch2_2")(x2, train=train)
    return concat([
        conv(c(256), 1, name="branch0")(x, train=train),
        conv(c(256), **h3, name="branch1_1a")(x1, train=train),
        conv(c(256), **v3, name="branch1_1b")(x1, train=train),
        conv(c(256), **h3, name="branch2_3a")(x2, train=train),
        conv(c(256), **v3, name="branch2_3b")(x2, train=train),
        Seq([Pool("avg", padding=1), conv(c(256), 1)], name="branch3")(x, train=train),
    ])


class InceptionV4(nn.Module):
  """Returns `(logits, features)`: features holds C1..C5 (nominal strides 2..32) and pre_logits."""
  num_classes: int = 1000
  width: float = 1.0
  depths: Tuple[int, int, int] = (4, 7, 3)  # Inception-A, -B, -C blocks (Fig. 9)
  drop_rate: float = 0.2  # "Dropout (keep 0.8)"
  bn_momentum: float = 0.9997  # TF-slim's Inception batch-norm decay
  dtype: Any = jnp.float32

  head_name = "last_linear"  # timm's classifier name (weight conversion, head reset)
  min_size = MIN_SIZE
  tiny_options = {"width": 1 / 16, "depths": (1, 1, 1)}  # for fast tests of the code paths

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_image(x, "inception_v4", MIN_SIZE)
    conv = functools.partial(ConvBN, bn_momentum=self.bn_momentum, dtype=self.dtype)
    c = scaled(self.width)
    n_a, n_b, n_c = self.depths
    blocks = (stem_v4(conv, c)
              + [InceptionA(conv, c) for _ in range(n_a)]
              + [ReductionA(conv, c, (192, 224, 256, 384))]
              + [InceptionB(conv, c) for _ in range(n_b)]
              + [ReductionB(conv, c)]
              + [InceptionC(conv, c) for _ in range(n_c)])
    # Block indices whose outputs are C1..C5 (timm's feature_info: 2, 3, 9, 17, 21 at full depth).
    taps = (2, 3, 5 + n_a, 6 + n_a + n_b, len(blocks) - 1)
    x, feats = Seq(blocks, name="features")(x.astype(self.dtype), train=train, capture=taps)
    out = {f"C{i + 1}": feats[j] for i, j in enumerate(taps)}
    logits, out["pre_logits"] = classifier_head(x, num_classes=self.num_classes, train=train,
                                                drop_rate=self.drop_rate, name="last_linear")
    return logits, out


@register_model
def inception_v4(**kwargs) -> InceptionV4:
  """Inception-v4 as in the paper (42,679,816 parameters with 1000 classes, as timm)."""
  return InceptionV4(**kwargs)

