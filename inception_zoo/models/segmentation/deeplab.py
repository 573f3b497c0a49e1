"""DeepLabV3 and DeepLabV3+ on a registered backbone (a ResNet or MobileNet v2 with `output_stride`).

Chen, Papandreou, Schroff, Adam. "Rethinking Atrous Convolution for Semantic Image Segmentation" (DeepLabV3),
arXiv:1706.05587: atrous spatial pyramid pooling (ASPP, Section 3.3) on the dilated backbone's last map: a 1x1 and
three 3x3 convolutions at rates (6, 12, 18) for output stride 16 (doubled at 8), and image pooling.
Chen, Zhu, Papandreou, Schroff, Adam. "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation" (DeepLabV3+), ECCV 2018 (arXiv:1802.02611), Section 3.1 and Fig. 2: the ASPP output upsampled to the
stride-4 map, concatenated with its 1x1 reduction to 48 channels, 3x3 convolutions at 256, a 1x1 classifier, and
bilinear upsampling to the input.

One module, `DeepLab`, follows three PyTorch codes layer for layer, its parameter names theirs (so their state dicts
convert by the timm rule of `inception_zoo.convert`, below the backbone's own names):

* `variant='standard'`, `decoder=True`: VainF/DeepLabV3Plus-Pytorch `network/_deeplab.py` (`DeepLabHeadV3Plus`,
  `ASPP`): ASPP branches conv + BN + ReLU at 256, the pooling branch *concatenated*, projection 1x1 + BN + ReLU +
  dropout 0.1; low-level 1x1 to 48 + BN + ReLU (`project`); concatenated [low-level, ASPP]; ONE 3x3 conv at 256 +
  BN + ReLU and the 1x1 classifier (`classifier`; the paper's two 3x3 convolutions: `decoder_convs=2`); every conv
  but the classifier without bias; Kaiming-normal init (fan_in, gain sqrt 2), BN 1 / 0, the classifier's bias
  PyTorch's default; bilinear resizing with align_corners=False. Backbones: torchvision's ResNet with
  `replace_stride_with_dilation` (7x7 stem) or MobileNet v2.
* `variant='standard'`, `decoder=False`: torchvision's `deeplabv3_resnet50` (`models/segmentation/deeplabv3.py`):
  the same ASPP with dropout 0.5, a 3x3 conv + BN + ReLU and the classifier on it (`classifier.0..4`), output
  stride 8, PyTorch's default init.
* `variant='cps'`: the DeepLabV3+ of CPS (Chen, Yuan, Zeng, Wang, "Semi-Supervised Semantic Segmentation with
  Cross Pseudo Supervision", CVPR 2021; charlesCXK/TorchSemiSeg `exp.voc/voc8.res50v3+.CPS/network.py`) that MGD
  (JayQine/MGD-SSSS `exp.*/*_deeplabv3plus/network.py`) reuses: deep-stem ResNet (its `base_model/resnet.py`),
  layer4 dilated by `_nostride_dilate` with rates 2, 4, 8 over its blocks (multi-grid (1, 2, 4) at output stride
  16, the first block included); ASPP with the four map convolutions concatenated, one BN over them (`map_bn`),
  LeakyReLU(0.01), a 1x1 reduction (`red_conv`), the image-pooling branch (conv, BN, LeakyReLU, `pool_red_conv`)
  *added*, BN + LeakyReLU, no dropout; low-level 1x1 to 48 + BN + ReLU (`reduce`); concatenated [ASPP, low-level];
  two 3x3 convs at 256 + BN + ReLU (`last_conv`); the classifier a separate 1x1 with bias (`classifier`);
  align_corners=True; BN eps 1e-5, momentum 0.1; head init Kaiming-normal fan_in (`init_weight`), BN 1 / 0.
  (MGD's MobileNet v2 student is not this: its backbone stays at output stride 32 with the last three blocks
  dilated 2, 4, 8 and its low-level reduction keeps 24 channels: projects/mgd's `deeplabv3plus_mobilenetv2_mgd`.)

`aux=True` adds an FCN head on C4 (torchvision's FCNHead: 3x3 conv to `aux_channels` + BN + ReLU, dropout 0.1,
1x1 to the classes, `aux_classifier`). `model.apply(variables, images, train=False)` on NHWC images returns
{'logits': (B, H, W, num_classes)} (and 'aux_logits', the same shape), bilinearly resized to the input; 'cps' also
returns 'features', the decoder's output before the classifier, at the low-level map's size ((B, H/4, W/4,
decoder_channels): CPS / MGD's `v3plus_feature`, which MGD's region-level distillation reads). The backbone is any
registered classifier with C2..C5 features (`body`, `body_options`); `train` runs its BatchNorm and the dropouts
(rng 'dropout').
"""
import functools
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import check_image
from inception_zoo.layers.resize import resize_bilinear
from inception_zoo.models import mobilenet, resnet  # noqa: F401  (registers the backbones)
from inception_zoo.models.segmentation.common import (ConvBNSeq, batch_norm, classifier_conv, conv2d, fcn_head,
                                                      has_option, kaiming_normal_fan_in, make_body)
from inception_zoo.registry import create_model, register_model

VARIANTS = ("standard", "cps")
OUTPUT_STRIDES = (8, 16, 32)


def aspp_rates(output_stride: int) -> Tuple[int, ...]:
  """DeepLabV3's rates: (6, 12, 18) at output stride 16, doubled at 8 (VainF and torchvision), halved at 32."""
  return tuple(r * 16 // output_stride for r in (6, 12, 18))


class ASPPConvs(nn.Module):
  """torchvision's / VainF's `ASPP.convs`: the 1x1 branch, a 3x3 branch per rate, the image-pooling branch (global
  mean, 1x1; its bilinear resize from 1x1 is a broadcast); each conv + BN + ReLU; concatenated."""
  rates: Tuple[int, ...]
  channels: int
  weight_init: str
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    unit = functools.partial(ConvBNSeq, self.channels, weight_init=self.weight_init, bn_momentum=self.bn_momentum,
                             dtype=self.dtype)
    outs = [unit(1, name="layers_0")(x, train=train)]
    outs += [unit(3, dilation=r, name=f"layers_{i + 1}")(x, train=train) for i, r in enumerate(self.rates)]
    # ASPPPooling is nn.Sequential(AdaptiveAvgPool2d, conv, BN, ReLU): its conv sits at index 1.
    pooled = unit(1, first=1, name=f"layers_{len(self.rates) + 1}")(jnp.mean(x, (1, 2), keepdims=True),
                                                                    train=train)
    outs.append(jnp.broadcast_to(pooled, x.shape[:3] + pooled.shape[3:]))
    return jnp.concatenate(outs, axis=-1)


class MapConvs(nn.Module):
  """CPS's `ASPP.map_convs` (a ModuleList of plain convolutions): 1x1 and a 3x3 per rate, concatenated."""
  rates: Tuple[int, ...]
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(conv2d, self.channels, kernel_init=kaiming_normal_fan_in, dtype=self.dtype)
    outs = [conv(1, name="layers_0")(x)]
    outs += [conv(3, dilation=r, name=f"layers_{i + 1}")(x) for i, r in enumerate(self.rates)]
    return jnp.concatenate(outs, axis=-1)


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling, as torchvision / VainF (`variant='standard'`: `convs`, `project`) or CPS
  (`'cps'`: pooling branch added, LeakyReLU, no dropout)."""
  rates: Tuple[int, ...]
  channels: int = 256
  variant: str = "standard"
  dropout: float = 0.0
  weight_init: str = "torch"  # standard: 'torch' (torchvision) | 'kaiming' (VainF); CPS is always 'kaiming'
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.variant == "cps":
      return self.cps(x, train)
    y = ASPPConvs(self.rates, self.channels, self.weight_init, self.bn_momentum, self.dtype, name="convs")(
        x, train=train)
    y = ConvBNSeq(self.channels, 1, weight_init=self.weight_init, bn_momentum=self.bn_momentum, dtype=self.dtype,
                  name="project")(y, train=train)
    return nn.Dropout(self.dropout, deterministic=not train)(y)

  def cps(self, x, train):
    bn = functools.partial(batch_norm, self.bn_momentum, self.dtype, train)
    conv = functools.partial(conv2d, self.channels, 1, kernel_init=kaiming_normal_fan_in, dtype=self.dtype)
    # nn.LeakyReLU() in the CPS code: slope 0.01, flax's default too.
    y = MapConvs(self.rates, self.channels, self.dtype, name="map_convs")(x)
    y = conv(name="red_conv")(nn.leaky_relu(bn("map_bn")(y)))
    pool = conv(name="global_pooling_conv")(jnp.mean(x, (1, 2), keepdims=True))
    pool = conv(name="pool_red_conv")(nn.leaky_relu(bn("global_pooling_bn")(pool)))
    return nn.leaky_relu(bn("red_bn")(y + pool))  # the pooled vector, repeated over the map, is added


class DeepLabV3PlusHead(nn.Module):
  """ASPP on the high-level map, the decoder with the low-level map (Chen et al. 2018, Fig. 2). 'standard' is
  VainF's `DeepLabHeadV3Plus` and ends with the classifier; 'cps' is CPS's `Head` (the classifier is outside)."""
  num_classes: int
  rates: Tuple[int, ...]
  variant: str = "standard"
  aspp_channels: int = 256
  aspp_dropout: float = 0.1
  low_level_channels: int = 48
  decoder_channels: int = 256
  decoder_convs: int = 1
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, low, high, *, train: bool):
    cps = self.variant == "cps"
    seq = functools.partial(ConvBNSeq, weight_init="kaiming", bn_momentum=self.bn_momentum, dtype=self.dtype)
    y = ASPP(self.rates, self.aspp_channels, self.variant, self.aspp_dropout, "kaiming", self.bn_momentum,
             self.dtype, name="aspp")(high, train=train)
    low = seq(self.low_level_channels, 1, name="reduce" if cps else "project")(low, train=train)
    y = resize_bilinear(y, low.shape[1:3], align_corners=cps)
    y = jnp.concatenate([y, low] if cps else [low, y], axis=-1)
    return seq(self.decoder_channels, 3, convs=self.decoder_convs, num_classes=0 if cps else self.num_classes,
               name="last_conv" if cps else "classifier")(y, train=train)


class DeepLab(nn.Module):
  """DeepLabV3+ (`decoder=True`) or DeepLabV3 on a registered backbone; see the module docstring for the
  variants. Options left None take the variant's value."""
  num_classes: int = 21  # PASCAL VOC's 20 classes and background
  body: str = "resnet101"  # a registered classifier returning C2..C5 (ResNet, MobileNet v2)
  body_options: Optional[Dict[str, Any]] = None  # its options (not output_stride, multi_grid: this module's)
  variant: str = "standard"  # 'standard' (VainF / torchvision) | 'cps' (CPS / MGD)
  decoder: bool = True  # DeepLabV3+; False: DeepLabV3's head (torchvision's layout, 'standard' only)
  output_stride: int = 16  # 16 | 8 | 32: the backbone's
  multi_grid: Optional[Tuple[int, ...]] = None  # last-stage rate multipliers; None: CPS's (1, 2, 4, ...), else ()
  aspp_rates: Optional[Tuple[int, ...]] = None  # None: (6, 12, 18) x 16 / output_stride
  aspp_channels: int = 256
  aspp_dropout: Optional[float] = None  # None: 0.1 (VainF), 0.5 (torchvision's DeepLabV3), 0 (CPS)
  low_level: str = "C2"  # the decoder's low-level map (stride 4)
  low_level_channels: int = 48
  decoder_channels: int = 256
  decoder_convs: Optional[int] = None  # 3x3 convolutions of the decoder; None: 1 (VainF), 2 (CPS and the paper)
  aux: bool = False  # FCN head on C4, 'aux_logits'
  aux_channels: int = 256
  bn_momentum: float = 0.9  # PyTorch's 0.1, backbone included
  dtype: Any = jnp.float32

  head_name = "classifier"  # the last 1x1 sits under it in every variant (head reset on another class count)
  min_size = resnet.MIN_SIZE  # the backbone's: C5 at least one pixel
  tiny_options = {"body_options": resnet.ResNet.tiny_options, "aspp_channels": 8, "low_level_channels": 4,
                  "decoder_channels": 8, "aux_channels": 8}

  def setup(self):
    if self.variant not in VARIANTS:
      raise UserError(f"deeplab variant must be one of {', '.join(VARIANTS)}; got '{self.variant}'")
    if self.output_stride not in OUTPUT_STRIDES:
      raise UserError(f"deeplab output_stride must be 8, 16 or 32; got {self.output_stride}")
    cps = self.variant == "cps"
    if cps and not self.decoder:
      raise UserError("deeplab variant 'cps' is a DeepLabV3+ (decoder=True); DeepLabV3 is torchvision's layout")
    fixed = {"output_stride": self.output_stride, "bn_momentum": self.bn_momentum, "dtype": self.dtype}
    multi_grid = self.multi_grid
    if multi_grid is None and cps and has_option(self.body, "multi_grid"):
      # CPS dilates layer4's blocks at 2, 4, 8: rate 2 (output stride 16) times 1, 2, 4 (doubling per block).
      probe = create_model(self.body, **{**(self.body_options or {}), "num_classes": 0})
      multi_grid = tuple(2 ** j for j in range(probe.layers[-1]))
    if multi_grid:
      fixed["multi_grid"] = tuple(multi_grid)
    self.backbone = make_body(self.body, self.body_options, "deeplab", **fixed)
    rates = tuple(self.aspp_rates or aspp_rates(self.output_stride))
    dropout = self.aspp_dropout
    if dropout is None:
      dropout = 0.0 if cps else (0.1 if self.decoder else 0.5)
    if self.decoder:
      convs = self.decoder_convs if self.decoder_convs is not None else (2 if cps else 1)
      head = DeepLabV3PlusHead(0 if cps else self.num_classes, rates, self.variant, self.aspp_channels, dropout,
                               self.low_level_channels, self.decoder_channels, convs, self.bn_momentum, self.dtype)
      if cps:
        self.head = head
        self.classifier = classifier_conv(self.num_classes, self.decoder_channels, "kaiming", self.dtype)
      else:
        self.classifier = head
    else:
      # torchvision's DeepLabHead: nn.Sequential(ASPP, conv3x3, BN, ReLU, conv1x1), PyTorch's default init.
      aspp = ASPP(rates, self.aspp_channels, "standard", dropout, "torch", self.bn_momentum, self.dtype)
      self.classifier = ConvBNSeq(self.aspp_channels, 3, first=1, pre=aspp, num_classes=self.num_classes,
                                  bn_momentum=self.bn_momentum, dtype=self.dtype)
    if self.aux:
      self.aux_classifier = fcn_head("torchvision", self.num_classes, self.aux_channels, self.bn_momentum,
                                     self.dtype)

  def __call__(self, images, *, train: bool = False) -> Dict[str, jnp.ndarray]:
    check_image(images, "deeplab", self.min_size)
    _, features = self.backbone(images.astype(self.dtype), train=train)
    if self.low_level not in features:
      raise UserError(f"deeplab low_level '{self.low_level}' is not a feature of {self.body} "
                      f"({', '.join(sorted(features))})")
    cps = self.variant == "cps"
    decoded = None
    if cps:
      decoded = self.head(features[self.low_level], features["C5"], train=train)
      y = self.classifier(decoded)
    elif self.decoder:
      y = self.classifier(features[self.low_level], features["C5"], train=train)
    else:
      y = self.classifier(features["C5"], train=train)
    size = images.shape[1:3]
    out = {"logits": resize_bilinear(y, size, align_corners=cps)}
    if decoded is not None:
      out["features"] = decoded
    if self.aux:
      out["aux_logits"] = resize_bilinear(self.aux_classifier(features["C4"], train=train), size,
                                          align_corners=cps)
    return out


class DeepLabMobileNet(DeepLab):
  """`DeepLab` on MobileNet v2; its own class only for the tiny test network (the backbone's tiny widths)."""
  tiny_options = {**DeepLab.tiny_options, "body_options": mobilenet.EfficientNet.tiny_options}


# CPS / MGD's deep stems: 3x3 convolutions of 64, 64, 128 channels (`deep_stem=True, stem_width=64`), 32, 32, 64 in
# MGD's ResNet-18 student (`stem_width=32`).
CPS_STEM_WIDTH = {"resnet18": 32}


def _deeplab(cls, kwargs, **defaults) -> DeepLab:
  options = {**defaults, **kwargs}
  body = options.get("body", "resnet101")
  if options.get("variant") == "cps" and has_option(body, "stem_type"):
    stem = {"stem_type": "deep", "stem_width": CPS_STEM_WIDTH.get(body, 64)}
    options["body_options"] = {**stem, **(options.get("body_options") or {})}
  return cls(**options)


@register_model(tags=("segmentation",))
def deeplabv3plus_resnet18(**kwargs) -> DeepLab:
  """DeepLabV3+ on ResNet-18, by default MGD's student: variant 'cps' with MGD's deep stem (32, 32, 64), output
  stride 16 (layer4 at rates 2, 4)."""
  return _deeplab(DeepLab, kwargs, body="resnet18", variant="cps")


@register_model(tags=("segmentation",))
def deeplabv3plus_resnet50(**kwargs) -> DeepLab:
  """DeepLabV3+ on ResNet-50, by default CPS's network (`res50v3+`): variant 'cps', deep stem (64, 64, 128),
  output stride 16; `variant='standard'` is VainF's `deeplabv3plus_resnet50` (7x7 stem)."""
  return _deeplab(DeepLab, kwargs, body="resnet50", variant="cps")


@register_model(tags=("segmentation",))
def deeplabv3plus_resnet101(**kwargs) -> DeepLab:
  """DeepLabV3+ on ResNet-101, by default CPS's and MGD's teacher: variant 'cps', deep stem (64, 64, 128), output
  stride 16 (layer4 at rates 2, 4, 8); `variant='standard'` is VainF's `deeplabv3plus_resnet101`."""
  return _deeplab(DeepLab, kwargs, body="resnet101", variant="cps")


@register_model(tags=("segmentation",))
def deeplabv3plus_mobilenetv2(**kwargs) -> DeepLabMobileNet:
  """VainF's `deeplabv3plus_mobilenet`: MobileNet v2 (timm's layout, without its 1280-channel head conv) at output
  stride 16, low-level features from the 24-channel stride-4 stage, ASPP on the 320-channel last stage. VainF's
  own MobileNet copy (torchvision's names) leaves the stem convolution unpadded and pads each block's input before
  the 1x1 expansion; this backbone pads as timm and torchvision do, so it is VainF's network up to those borders."""
  body_options = {"head_chs": 0, **(kwargs.pop("body_options", None) or {})}
  return _deeplab(DeepLabMobileNet, kwargs, body="mobilenetv2_100", variant="standard", body_options=body_options)


@register_model(tags=("segmentation",))
def deeplabv3_resnet50(**kwargs) -> DeepLab:
  """torchvision's `deeplabv3_resnet50`: ResNet-50 (7x7 stem) at output stride 8, ASPP (12, 24, 36) + head, the
  FCN auxiliary head with `aux=True`; 39,638,869 parameters with 21 classes (42,004,074 with aux), as
  torchvision."""
  return _deeplab(DeepLab, kwargs, body="resnet50", variant="standard", decoder=False, output_stride=8)
