"""Poincare ResNet: a CIFAR ResNet whose every layer lives on the Poincare ball.

van Spengler, Berkhout, Mettes. "Poincare ResNet", ICCV 2023 (arXiv:2303.14027). The layout is the
CIFAR ResNet of He et al. (Section 4.2 of "Deep Residual Learning", depth 6n + 2): a 3x3 stem, three
stages of n basic blocks (the second and third starting at stride 2), global average pooling and a
classifier, with every piece replaced by its Poincare counterpart from poincare.py:
Poincare 3x3 convolutions (identity init), Poincare midpoint batch norm, ReLU on the tangent space at
0, residual connections by Mobius addition f(x) (+) x (the authors' default "fr" order), a 1x1 stride-2
Poincare convolution as the shortcut where a stage starts, and a Poincare FC classifier.

Our reading, from the authors' code (maxvanspengler/poincare-resnet, `HyperbolicResNet`): one fixed
curvature c = 0.1 for every layer; the image enters as tangent vectors at 0 (each pixel's channels
mapped to the ball by exp_0); pooling averages the tangent vectors log_0(x) over the map; the logits
are log_0 of the classifier's output. The paper's networks: ResNet-20 and ResNet-32; widths
(8, 16, 32) by default, as the authors' scripts name them (`8-16-32-resnet-20`). Not registered
with `inception_zoo.registry`: its batch norm has no `momentum`/dropout options and its layers are
an order of magnitude slower to compile than the zoo's generic model tests assume; experiments
build it directly.
"""
from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.projects.poincare_resnet.poincare import (PoincareBatchNorm, PoincareConv2d, PoincareLinear,
                                             check_curvature, expmap0, logmap0, mobius_add,
                                             tangent_relu)
from inception_zoo.layers import check_image
from inception_zoo.registry import register_model


class PoincareBlock(nn.Module):
  """conv-BN-ReLU-conv-BN, then f(x) (+) shortcut(x) and ReLU."""
  features: int
  strides: int = 1
  c: float = 0.1
  id_init: bool = True
  use_midpoint: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    c = self.c
    norm = lambda name: PoincareBatchNorm(c, use_midpoint=self.use_midpoint, name=name)  # noqa: E731
    y = PoincareConv2d(self.features, 3, self.strides, 1, c, id_init=self.id_init, name="conv1")(x)
    y = tangent_relu(norm("bn1")(y, train=train), c)
    y = PoincareConv2d(self.features, 3, 1, 1, c, id_init=self.id_init, name="conv2")(y)
    y = norm("bn2")(y, train=train)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = PoincareConv2d(self.features, 1, self.strides, 0, c, id_init=self.id_init, name="downsample")(x)
    return tangent_relu(mobius_add(y, x, c), c)


class PoincareResNet(nn.Module):
  """Poincare ResNet of depth 2 n S + 2 for S = len(widths) stages (6n + 2 for the paper's three).
  Returns `(logits, features)`: features holds C0, C1, ... (the stages' outputs, points of the ball)
  and pre_logits (the pooled tangent vector at 0)."""
  num_classes: int = 10
  depth: int = 20
  widths: Tuple[int, int, int] = (8, 16, 32)
  c: float = 0.1
  id_init: bool = True
  use_midpoint: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    stages = len(self.widths)
    check_image(x, "poincare resnet", 2 ** (stages - 1))
    c = check_curvature(self.c)
    if stages < 1 or self.depth < 2 * stages + 2 or (self.depth - 2) % (2 * stages):
      raise UserError(f"poincare resnet depth must be 2 n S + 2 with n >= 1 for S = {stages} stages "
                      f"(20, 32, ... for three); got {self.depth}")
    n = (self.depth - 2) // (2 * stages)
    x = expmap0(x.astype(jnp.float32), c)
    x = PoincareConv2d(self.widths[0], 3, 1, 1, c, id_init=self.id_init, name="conv1")(x)
    x = tangent_relu(PoincareBatchNorm(c, use_midpoint=self.use_midpoint, name="bn1")(x, train=train), c)
    out = {}
    for i, width in enumerate(self.widths):
      for j in range(n):
        x = PoincareBlock(width, 2 if i > 0 and j == 0 else 1, c, self.id_init, self.use_midpoint,
                          name=f"layer{i + 1}_{j}")(x, train=train)
      out[f"C{i}"] = x
    out["pre_logits"] = jnp.mean(logmap0(x, c), axis=(1, 2))
    y = PoincareLinear(self.num_classes, c, id_init=self.id_init, name="fc")(expmap0(out["pre_logits"], c))
    return logmap0(y, c), out


@register_model(tags=("hyperbolic",))
def poincare_resnet(**kwargs) -> PoincareResNet:
  return PoincareResNet(**kwargs)
