"""InceptionNeXt.

Yu, Zhou, Yan, Wang. "InceptionNeXt: When Inception Meets ConvNeXt", CVPR 2024 (arXiv:2303.16900),
Section 3 and its table of model configurations.

A ConvNeXt-shaped (MetaNeXt) network whose 7x7 depthwise token mixer is replaced by an Inception
depthwise convolution: the channels are split into four groups, an identity group and three that get
a small square kernel (3x3), a horizontal band (1xk) and a vertical band (kx1) depthwise convolution
(k = 11, each convolved group 1/8 of the channels; atto uses k = 9 and 1/4). Each MetaNeXt block is
    x + gamma * Mlp(BN(InceptionDWConv(x)))
with a per-channel layer scale gamma initialised to 1e-6 and a two-layer 1x1-convolution MLP with
GELU. A 4x4 stride-4 patchify stem with BN, then four stages at strides 4/8/16/32 (stages 2-4 start
with BN and a 2x2 stride-2 convolution), and an MLP head: average pooling, Linear to 3x the width,
GELU, LayerNorm, dropout, Linear.

Module names follow timm's `MetaNeXt`, so `inception_zoo.convert` loads `inception_next_*` weights by
rule (1x1 "Linear" layers of the blocks are convolutions there too, hence here).
"""
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.layers import Seq, check_image, dense_init, drop_path, drop_path_rates
from inception_zoo.registry import register_model

# Valid 4x4 stem and three valid 2x2 downsamplings: 32 px leave one pixel at stride 32.
MIN_SIZE = 32
# timm initialises every conv and linear weight with a (truncated) normal of std 0.02 (`dense_init`),
# biases at 0.


def batch_norm(train: bool, momentum: float, dtype, name: str) -> nn.BatchNorm:
  """PyTorch BatchNorm2d at its defaults (eps 1e-5; momentum 0.1 is Flax's 0.9)."""
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype,
                      name=name)


class InceptionDWConv2d(nn.Module):
  """The paper's token mixer: identity | 3x3 | 1xk | kx1 depthwise, concatenated in that order along
  the channels."""
  square_kernel: int = 3
  band_kernel: int = 11
  branch_ratio: float = 0.125
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    g = int(c * self.branch_ratio)
    x_id, x_hw, x_w, x_h = jnp.split(x, [c - 3 * g, c - 2 * g, c - g], axis=-1)
    s, b = self.square_kernel // 2, self.band_kernel // 2

    def dwconv(kernel, padding, name):
      return nn.Conv(g, kernel, padding=padding, feature_group_count=g, kernel_init=dense_init,
                     dtype=self.dtype, name=name)

    return jnp.concatenate([
        x_id,
        dwconv((self.square_kernel,) * 2, ((s, s), (s, s)), "dwconv_hw")(x_hw),
        dwconv((1, self.band_kernel), ((0, 0), (b, b)), "dwconv_w")(x_w),
        dwconv((self.band_kernel, 1), ((b, b), (0, 0)), "dwconv_h")(x_h),
    ], axis=-1)


class ConvMlp(nn.Module):
  """1x1 convolution to `hidden` channels, GELU, 1x1 convolution back."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    out = x.shape[-1]
    x = nn.Conv(self.hidden, (1, 1), kernel_init=dense_init, dtype=self.dtype, name="fc1")(x)
    x = nn.gelu(x, approximate=False)
    return nn.Conv(out, (1, 1), kernel_init=dense_init, dtype=self.dtype, name="fc2")(x)


class MetaNeXtBlock(nn.Module):
  mlp_ratio: float
  mixer: Dict[str, Any]  # InceptionDWConv2d options
  ls_init_value: float
  drop_path: float
  bn_momentum: float
  dtype: Any

  @nn.compact
  def __call__(self, x, *, train):
    dim = x.shape[-1]
    y = InceptionDWConv2d(**self.mixer, dtype=self.dtype, name="token_mixer")(x)
    y = batch_norm(train, self.bn_momentum, self.dtype, "norm")(y)
    y = ConvMlp(int(self.mlp_ratio * dim), dtype=self.dtype, name="mlp")(y)
    gamma = self.param("gamma", nn.initializers.constant(self.ls_init_value), (dim,))
    y = y * gamma.astype(y.dtype)
    return x + drop_path(self.drop_path, train)(y)


class Patchify(nn.Module):
  """Non-overlapping `patch`x`patch` convolution with BatchNorm after it (the stem) or before it
  (stage downsampling): timm's two-member nn.Sequential, hence the names layers_0/layers_1."""
  features: int
  patch: int
  norm_first: bool
  bn_momentum: float
  dtype: Any

  @nn.compact
  def __call__(self, x, *, train):
    def norm(name):
      return batch_norm(train, self.bn_momentum, self.dtype, name)

    def conv(name):
      return nn.Conv(self.features, (self.patch,) * 2, (self.patch,) * 2, padding="VALID",
                     kernel_init=dense_init, dtype=self.dtype, name=name)

    if self.norm_first:
      return conv("layers_1")(norm("layers_0")(x))
    return norm("layers_1")(conv("layers_0")(x))


class MetaNeXtStage(nn.Module):
  dim: int
  downsample: bool
  mlp_ratio: float
  mixer: Dict[str, Any]
  ls_init_value: float
  drop_paths: Tuple[float, ...]  # one rate per block
  bn_momentum: float
  dtype: Any

  @nn.compact
  def __call__(self, x, *, train):
    if self.downsample:
      x = Patchify(self.dim, 2, norm_first=True, bn_momentum=self.bn_momentum, dtype=self.dtype,
                   name="downsample")(x, train=train)
    blocks = [MetaNeXtBlock(self.mlp_ratio, self.mixer, self.ls_init_value, rate, self.bn_momentum,
                            self.dtype) for rate in self.drop_paths]
    return Seq(blocks, name="blocks")(x, train=train)


class MlpClassifierHead(nn.Module):
  """Average pooling, Linear to `mlp_ratio` x the width, GELU, LayerNorm, dropout, Linear.

  Returns `(logits, pre_logits)`, pre_logits being the MLP's output; with `num_classes=0` (as timm)
  the logits are those pre_logits.
  """
  num_classes: int
  mlp_ratio: float = 3.0
  drop_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train):
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(int(self.mlp_ratio * x.shape[-1]), kernel_init=dense_init, dtype=self.dtype,
                 name="fc1")(x)
    x = nn.gelu(x, approximate=False)
    pre_logits = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, dtype=self.dtype, name="norm")(x)
    if self.num_classes == 0:
      return pre_logits, pre_logits
    x = nn.Dropout(self.drop_rate, deterministic=not train)(pre_logits)
    return nn.Dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype, name="fc2")(x), pre_logits


class InceptionNeXt(nn.Module):
  """Returns `(logits, features)`: features holds C2..C5 (the stage outputs, strides 4..32) and
  pre_logits (the head MLP's output)."""
  num_classes: int = 1000
  depths: Tuple[int, ...] = (3, 3, 9, 3)
  dims: Tuple[int, ...] = (96, 192, 384, 768)
  mlp_ratios: Tuple[float, ...] = (4, 4, 4, 3)
  head_mlp_ratio: float = 3.0
  square_kernel: int = 3
  band_kernel: int = 11
  branch_ratio: float = 0.125  # channels of each convolved group / all channels
  ls_init_value: float = 1e-6
  drop_rate: float = 0.0  # head dropout
  drop_path_rate: float = 0.0  # stochastic depth at the last block
  bn_momentum: float = 0.9  # PyTorch's 0.1
  dtype: Any = jnp.float32

  head_name = "head"  # timm's head module (weight conversion, head reset)
  timm_classifier = "head.fc2"  # its last Linear, whose rows count the classes
  min_size = MIN_SIZE
  tiny_options = {"depths": (1, 1, 1, 1), "dims": (16, 16, 24, 32)}  # for fast tests of the code paths

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    check_image(x, "inception_next", MIN_SIZE)
    mixer = dict(square_kernel=self.square_kernel, band_kernel=self.band_kernel,
                 branch_ratio=self.branch_ratio)
    x = Patchify(self.dims[0], 4, norm_first=False, bn_momentum=self.bn_momentum, dtype=self.dtype,
                 name="stem")(x.astype(self.dtype), train=train)
    rates = drop_path_rates(self.drop_path_rate, self.depths)
    stages = [MetaNeXtStage(dim, i > 0, self.mlp_ratios[i], mixer, self.ls_init_value, rates[i],
                            self.bn_momentum, self.dtype) for i, dim in enumerate(self.dims)]
    taps = tuple(range(len(stages)))
    x, feats = Seq(stages, name="stages")(x, train=train, capture=taps)
    out = {f"C{i + 2}": feats[i] for i in taps}
    logits, out["pre_logits"] = MlpClassifierHead(self.num_classes, self.head_mlp_ratio,
                                                  self.drop_rate, self.dtype, name="head")(x, train=train)
    return logits, out


# The paper's configurations (atto from the official repository), as in timm.
VARIANTS = {
    "atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), band_kernel=9, branch_ratio=0.25),
    "tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
}


@register_model
def inception_next_atto(**kwargs) -> InceptionNeXt:
  """InceptionNeXt-A (4,156,520 parameters with 1000 classes, as timm)."""
  return InceptionNeXt(**{**VARIANTS["atto"], **kwargs})


@register_model
def inception_next_tiny(**kwargs) -> InceptionNeXt:
  """InceptionNeXt-T (28,055,680 parameters with 1000 classes, as timm)."""
  return InceptionNeXt(**{**VARIANTS["tiny"], **kwargs})


@register_model
def inception_next_small(**kwargs) -> InceptionNeXt:
  """InceptionNeXt-S (49,374,016 parameters with 1000 classes, as timm)."""
  return InceptionNeXt(**{**VARIANTS["small"], **kwargs})


@register_model
def inception_next_base(**kwargs) -> InceptionNeXt:
  """InceptionNeXt-B (86,672,136 parameters with 1000 classes, as timm)."""
  return InceptionNeXt(**{**VARIANTS["base"], **kwargs})
