"""Feature Pyramid Network on a registered backbone's C2..C5 (Lin et al., "Feature Pyramid Networks for
Object Detection", CVPR 2017), module for module torchvision's `ops/feature_pyramid_network.py` and
`models/detection/backbone_utils.py`, so its weights convert by rule.

FPN: a 1x1 lateral (`inner_blocks_i`) per input level and a 3x3 output conv (`layer_blocks_i`), both with
bias and Kaiming-uniform (a=1) init; top-down, the coarser merged map is upsampled by nearest neighbour to
the lateral's size and added. mmsegmentation's FPN neck is the same network but for its Xavier-uniform init
(`weight_init='mmseg'`). Extra levels: `maxpool` (Faster / Mask R-CNN's P6 = P5 subsampled by 2) or
`p6p7` (RetinaNet's P6 = conv3x3/2 of P5, P7 = conv3x3/2 of ReLU(P6)).

The backbone runs with frozen BatchNorm by default (its running statistics; torchvision's
FrozenBatchNorm2d, eps 1e-5 as here); frozen stages are the optimizer's business (`optimizer.freeze`).
With `frozen_bn=False` the BatchNorm statistics of a data-parallel jitted step are those of the global
batch over the mesh: synchronised BatchNorm, with no extra code.
"""
from typing import Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.models import resnet  # noqa: F401  (registers the backbones)
from inception_zoo.registry import create_model

# torchvision's `nn.init.kaiming_uniform_(w, a=1)`: bound sqrt(3 / fan_in).
kaiming_uniform_a1 = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
EXTRAS = ("maxpool", "p6p7", "none")
# Kernel initialisers by codebase: torchvision's, and mmseg's FPN neck (`init_cfg=dict(type='Xavier', layer='Conv2d',
# distribution='uniform')`: bound sqrt(6 / (fan_in + fan_out))); biases start at 0 in both.
INITS = {"torchvision": kaiming_uniform_a1, "mmseg": nn.initializers.xavier_uniform()}


def conv(features: int, kernel: int, strides: int = 1, name: str = None, kernel_init=kaiming_uniform_a1):
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides, padding=((pad, pad), (pad, pad)), kernel_init=kernel_init,
                 bias_init=nn.initializers.zeros, name=name)


def upsample_nearest(x, size: Tuple[int, int]):
  """PyTorch's `F.interpolate(x, size, mode='nearest')` on NHWC: source index floor(i * in / out)."""
  rows = jnp.minimum(jnp.floor(jnp.arange(size[0]) * (x.shape[1] / size[0])).astype(jnp.int32), x.shape[1] - 1)
  cols = jnp.minimum(jnp.floor(jnp.arange(size[1]) * (x.shape[2] / size[1])).astype(jnp.int32), x.shape[2] - 1)
  return x[:, rows][:, :, cols]


class LastLevelP6P7(nn.Module):
  out_channels: int = 256

  @nn.compact
  def __call__(self, x):
    p6 = conv(self.out_channels, 3, 2, name="p6")(x)
    return [p6, conv(self.out_channels, 3, 2, name="p7")(nn.relu(p6))]


class FPN(nn.Module):
  """Maps [C_i, ...] (fine to coarse, NHWC) to [P_i, ...] plus the extra levels, `out_channels` each."""
  out_channels: int = 256
  extra: str = "maxpool"
  p6p7_input: str = "p5"  # 'p5' (torchvision's RetinaNet) or 'c5' (the paper's and detectron's)
  weight_init: str = "torchvision"  # 'torchvision' | 'mmseg': the lateral and output convolutions' init

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]):
    if self.extra not in EXTRAS:
      raise UserError(f"unknown FPN extra levels '{self.extra}' ({', '.join(EXTRAS)})")
    if self.weight_init not in INITS:
      raise UserError(f"unknown FPN weight_init '{self.weight_init}' ({', '.join(INITS)})")
    n = len(features)
    inner = [conv(self.out_channels, 1, name=f"inner_blocks_{i}", kernel_init=INITS[self.weight_init])
             for i in range(n)]
    layer = [conv(self.out_channels, 3, name=f"layer_blocks_{i}", kernel_init=INITS[self.weight_init])
             for i in range(n)]
    last = inner[-1](features[-1])
    results = [layer[-1](last)]
    for i in range(n - 2, -1, -1):
      lateral = inner[i](features[i])
      last = lateral + upsample_nearest(last, lateral.shape[1:3])
      results.insert(0, layer[i](last))
    if self.extra == "maxpool":  # F.max_pool2d(P5, kernel 1, stride 2)
      results.append(results[-1][:, ::2, ::2])
    elif self.extra == "p6p7":
      source = results[-1] if self.p6p7_input == "p5" else features[-1]
      results += LastLevelP6P7(self.out_channels, name="extra_blocks")(source)
    return results


class BackboneWithFPN(nn.Module):
  """A classifier's feature levels (`levels` of its output dict) through an FPN: the pyramid, fine to coarse."""
  body: nn.Module
  fpn: FPN
  levels: Tuple[str, ...] = ("C2", "C3", "C4", "C5")
  frozen_bn: bool = True

  @property
  def min_size(self) -> int:
    return getattr(self.body, "min_size", 32)

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    _, features = self.body(images, train=train and not self.frozen_bn)
    return self.fpn([features[k] for k in self.levels])


def resnet_fpn_backbone(name: str = "resnet50", *, extra: str = "maxpool",
                        levels: Tuple[str, ...] = ("C2", "C3", "C4", "C5"), frozen_bn: bool = True,
                        out_channels: int = 256, p6p7_input: str = "p5", **body_options) -> BackboneWithFPN:
  """torchvision's `resnet_fpn_backbone` / `_resnet_fpn_extractor` on a registered classifier `name`."""
  body = create_model(name, num_classes=0, **body_options)
  return BackboneWithFPN(body, FPN(out_channels, extra, p6p7_input), tuple(levels), frozen_bn)
