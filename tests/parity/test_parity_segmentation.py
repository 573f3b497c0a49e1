"""Segmentation models equal the PyTorch code they follow, in eval mode, with the same random weights (every weight
redrawn from N(0, 1/fan_in), BatchNorm scales, shifts and running statistics randomised, so a mistake in any of them
changes the logits): torchvision's `deeplabv3_resnet50` (aux head included); VainF's DeepLabV3+ head
(DeepLabV3Plus-Pytorch `network/_deeplab.py`) on torchvision's dilated ResNet; the CPS / MGD DeepLabV3+
(charlesCXK/TorchSemiSeg `furnace/base_model/resnet.py`, `exp.voc/voc8.res50v3+.CPS/network.py`; MGD-SSSS's ResNet-18
student `HeadSmall`); mmseg's Semantic FPN (`configs/_base_/models/fpn_r50.py`: ResNetV1c, `necks/fpn.py`,
`decode_heads/fpn_head.py`). The non-torchvision references are transcribed below line by line (mmcv's ConvModule
and the registries reduced to what these configurations use). Also: the bilinear resize against `F.interpolate`,
the dilated backbones against timm's `output_stride`, the heads on maps larger than the atrous rates, and the heads'
initial weights against each codebase's initialisation. Logits agree within 1e-4 x their largest magnitude."""
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from timm_helpers import randomize, randomized_timm
from torchvision.models._utils import IntermediateLayerGetter

from inception_zoo import create_model
from inception_zoo.convert import convert_timm, mmseg_key, state_dict_to_flax, timm_key, torchvision_key
from inception_zoo.layers.resize import resize_bilinear
from inception_zoo.models.detection.fpn import FPN as FlaxFPN
from inception_zoo.models.segmentation.common import fcn_head
from inception_zoo.models.segmentation.deeplab import ASPP as FlaxASPP
from inception_zoo.models.segmentation.deeplab import DeepLabV3PlusHead
from inception_zoo.models.segmentation.common import ConvBNSeq, classifier_conv
from inception_zoo.models.segmentation.semantic_fpn import FPNHead as FlaxFPNHead
from inception_zoo.pytree import path_str

TOLERANCE = 1e-4  # x the largest |logit| of the reference


def images(size, batch=1, seed=0):
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def load(model, reference, x, key=timm_key, **kwargs):
  """Flax variables of `model` (traced on `x`) from the reference's state dict, strictly (all used, all filled)."""
  shapes = jax.eval_shape(partial(model.init, **kwargs), jax.random.key(0), *x)
  state_dict = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
  return state_dict_to_flax(state_dict, shapes, key, "reference")


def assert_close(ours, theirs, what=""):
  theirs = np.asarray(theirs)
  scale = np.abs(theirs).max()
  assert ours.shape == theirs.shape and scale > 0.1, (what, ours.shape, theirs.shape, scale)
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=TOLERANCE * scale, rtol=0, err_msg=what)


# --- VainF/DeepLabV3Plus-Pytorch, network/_deeplab.py (DeepLabHeadV3Plus and its ASPP), transcribed. ---

class VainFDeepLabHeadV3Plus(nn.Module):
  def __init__(self, in_channels, low_level_channels, num_classes, aspp_dilate=[12, 24, 36]):  # noqa: B006
    super(VainFDeepLabHeadV3Plus, self).__init__()
    self.project = nn.Sequential(
        nn.Conv2d(low_level_channels, 48, 1, bias=False),
        nn.BatchNorm2d(48),
        nn.ReLU(inplace=True),
    )
    self.aspp = VainFASPP(in_channels, aspp_dilate)
    self.classifier = nn.Sequential(
        nn.Conv2d(304, 256, 3, padding=1, bias=False),
        nn.BatchNorm2d(256),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, num_classes, 1)
    )
    self._init_weight()

  def forward(self, feature):
    low_level_feature = self.project(feature['low_level'])
    output_feature = self.aspp(feature['out'])
    output_feature = F.interpolate(output_feature, size=low_level_feature.shape[2:], mode='bilinear',
                                   align_corners=False)
    return self.classifier(torch.cat([low_level_feature, output_feature], dim=1))

  def _init_weight(self):
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight)
      elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)


class VainFASPPConv(nn.Sequential):
  def __init__(self, in_channels, out_channels, dilation):
    modules = [
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True)
    ]
    super(VainFASPPConv, self).__init__(*modules)


class VainFASPPPooling(nn.Sequential):
  def __init__(self, in_channels, out_channels):
    super(VainFASPPPooling, self).__init__(
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True))

  def forward(self, x):
    size = x.shape[-2:]
    x = super(VainFASPPPooling, self).forward(x)
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


class VainFASPP(nn.Module):
  def __init__(self, in_channels, atrous_rates):
    super(VainFASPP, self).__init__()
    out_channels = 256
    modules = []
    modules.append(nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True)))
    rate1, rate2, rate3 = tuple(atrous_rates)
    modules.append(VainFASPPConv(in_channels, out_channels, rate1))
    modules.append(VainFASPPConv(in_channels, out_channels, rate2))
    modules.append(VainFASPPConv(in_channels, out_channels, rate3))
    modules.append(VainFASPPPooling(in_channels, out_channels))
    self.convs = nn.ModuleList(modules)
    self.project = nn.Sequential(
        nn.Conv2d(5 * out_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Dropout(0.1),)

  def forward(self, x):
    res = []
    for conv in self.convs:
      res.append(conv(x))
    res = torch.cat(res, dim=1)
    return self.project(res)


class VainFDeepLabV3Plus(nn.Module):
  """network/modeling.py `_segm_resnet('deeplabv3plus', ...)` and utils.py `_SimpleSegmentationModel`, on
  torchvision's ResNet (VainF's backbone/resnet.py is its copy) with `layers` blocks per stage."""

  def __init__(self, layers, num_classes, output_stride):
    super().__init__()
    if output_stride == 8:
      replace_stride_with_dilation = [False, True, True]
      aspp_dilate = [12, 24, 36]
    else:
      replace_stride_with_dilation = [False, False, True]
      aspp_dilate = [6, 12, 18]
    backbone = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, layers,
                                                replace_stride_with_dilation=replace_stride_with_dilation)
    self.backbone = IntermediateLayerGetter(backbone, return_layers={'layer4': 'out', 'layer1': 'low_level'})
    self.classifier = VainFDeepLabHeadV3Plus(2048, 256, num_classes, aspp_dilate)

  def forward(self, x):
    input_shape = x.shape[-2:]
    features = self.backbone(x)
    x = self.classifier(features)
    return F.interpolate(x, size=input_shape, mode='bilinear', align_corners=False)


# --- charlesCXK/TorchSemiSeg furnace/base_model/resnet.py and exp.voc/voc8.res50v3+.CPS/network.py, transcribed
# (MGD-SSSS's networks are the same code; its ResNet-18 student's `HeadSmall` is `Head` at 512 / 64 channels, the
# in-channels a parameter here). ---

def cps_conv3x3(in_planes, out_planes, stride=1):
  return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class CPSBasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, norm_layer=None, bn_eps=1e-5, bn_momentum=0.1, downsample=None,
               inplace=True):
    super(CPSBasicBlock, self).__init__()
    self.conv1 = cps_conv3x3(inplanes, planes, stride)
    self.bn1 = norm_layer(planes, eps=bn_eps, momentum=bn_momentum)
    self.relu = nn.ReLU(inplace=inplace)
    self.relu_inplace = nn.ReLU(inplace=True)
    self.conv2 = cps_conv3x3(planes, planes)
    self.bn2 = norm_layer(planes, eps=bn_eps, momentum=bn_momentum)
    self.downsample = downsample
    self.stride = stride
    self.inplace = inplace

  def forward(self, x):
    residual = x
    out = self.conv1(x)
    out = self.bn1(out)
    out = self.relu(out)
    out = self.conv2(out)
    out = self.bn2(out)
    if self.downsample is not None:
      residual = self.downsample(x)
    if self.inplace:
      out += residual
    else:
      out = out + residual
    out = self.relu_inplace(out)
    return out


class CPSBottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, norm_layer=None, bn_eps=1e-5, bn_momentum=0.1, downsample=None,
               inplace=True):
    super(CPSBottleneck, self).__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
    self.bn1 = norm_layer(planes, eps=bn_eps, momentum=bn_momentum)
    self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
    self.bn2 = norm_layer(planes, eps=bn_eps, momentum=bn_momentum)
    self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
    self.bn3 = norm_layer(planes * self.expansion, eps=bn_eps, momentum=bn_momentum)
    self.relu = nn.ReLU(inplace=inplace)
    self.relu_inplace = nn.ReLU(inplace=True)
    self.downsample = downsample
    self.stride = stride
    self.inplace = inplace

  def forward(self, x):
    residual = x
    out = self.conv1(x)
    out = self.bn1(out)
    out = self.relu(out)
    out = self.conv2(out)
    out = self.bn2(out)
    out = self.relu(out)
    out = self.conv3(out)
    out = self.bn3(out)
    if self.downsample is not None:
      residual = self.downsample(x)
    if self.inplace:
      out += residual
    else:
      out = out + residual
    out = self.relu_inplace(out)
    return out


class CPSResNet(nn.Module):
  def __init__(self, block, layers, norm_layer=nn.BatchNorm2d, bn_eps=1e-5, bn_momentum=0.1, deep_stem=False,
               stem_width=32, inplace=True):
    self.inplanes = stem_width * 2 if deep_stem else 64
    super(CPSResNet, self).__init__()
    if deep_stem:
      self.conv1 = nn.Sequential(
          nn.Conv2d(3, stem_width, kernel_size=3, stride=2, padding=1, bias=False),
          norm_layer(stem_width, eps=bn_eps, momentum=bn_momentum),
          nn.ReLU(inplace=inplace),
          nn.Conv2d(stem_width, stem_width, kernel_size=3, stride=1, padding=1, bias=False),
          norm_layer(stem_width, eps=bn_eps, momentum=bn_momentum),
          nn.ReLU(inplace=inplace),
          nn.Conv2d(stem_width, stem_width * 2, kernel_size=3, stride=1, padding=1, bias=False),
      )
    else:
      self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    self.bn1 = norm_layer(stem_width * 2 if deep_stem else 64, eps=bn_eps, momentum=bn_momentum)
    self.relu = nn.ReLU(inplace=inplace)
    self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    self.layer1 = self._make_layer(block, norm_layer, 64, layers[0], inplace, bn_eps=bn_eps,
                                   bn_momentum=bn_momentum)
    self.layer2 = self._make_layer(block, norm_layer, 128, layers[1], inplace, stride=2, bn_eps=bn_eps,
                                   bn_momentum=bn_momentum)
    self.layer3 = self._make_layer(block, norm_layer, 256, layers[2], inplace, stride=2, bn_eps=bn_eps,
                                   bn_momentum=bn_momentum)
    self.layer4 = self._make_layer(block, norm_layer, 512, layers[3], inplace, stride=2, bn_eps=bn_eps,
                                   bn_momentum=bn_momentum)

  def _make_layer(self, block, norm_layer, planes, blocks, inplace=True, stride=1, bn_eps=1e-5, bn_momentum=0.1):
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
          norm_layer(planes * block.expansion, eps=bn_eps, momentum=bn_momentum),
      )
    layers = []
    layers.append(block(self.inplanes, planes, stride, norm_layer, bn_eps, bn_momentum, downsample, inplace))
    self.inplanes = planes * block.expansion
    for _ in range(1, blocks):
      layers.append(block(self.inplanes, planes, norm_layer=norm_layer, bn_eps=bn_eps, bn_momentum=bn_momentum,
                          inplace=inplace))
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.conv1(x)
    x = self.bn1(x)
    x = self.relu(x)
    x = self.maxpool(x)
    blocks = []
    x = self.layer1(x)
    blocks.append(x)
    x = self.layer2(x)
    blocks.append(x)
    x = self.layer3(x)
    blocks.append(x)
    x = self.layer4(x)
    blocks.append(x)
    return blocks


class CPSASPP(nn.Module):
  def __init__(self, in_channels, out_channels, dilation_rates=(12, 24, 36), hidden_channels=256,
               norm_act=nn.BatchNorm2d, pooling_size=None):
    super(CPSASPP, self).__init__()
    self.pooling_size = pooling_size
    self.map_convs = nn.ModuleList([
        nn.Conv2d(in_channels, hidden_channels, 1, bias=False),
        nn.Conv2d(in_channels, hidden_channels, 3, bias=False, dilation=dilation_rates[0],
                  padding=dilation_rates[0]),
        nn.Conv2d(in_channels, hidden_channels, 3, bias=False, dilation=dilation_rates[1],
                  padding=dilation_rates[1]),
        nn.Conv2d(in_channels, hidden_channels, 3, bias=False, dilation=dilation_rates[2],
                  padding=dilation_rates[2])
    ])
    self.map_bn = norm_act(hidden_channels * 4)
    self.global_pooling_conv = nn.Conv2d(in_channels, hidden_channels, 1, bias=False)
    self.global_pooling_bn = norm_act(hidden_channels)
    self.red_conv = nn.Conv2d(hidden_channels * 4, out_channels, 1, bias=False)
    self.pool_red_conv = nn.Conv2d(hidden_channels, out_channels, 1, bias=False)
    self.red_bn = norm_act(out_channels)
    self.leak_relu = nn.LeakyReLU()

  def forward(self, x):
    out = torch.cat([m(x) for m in self.map_convs], dim=1)
    out = self.map_bn(out)
    out = self.leak_relu(out)
    out = self.red_conv(out)
    pool = self._global_pooling(x)
    pool = self.global_pooling_conv(pool)
    pool = self.global_pooling_bn(pool)
    pool = self.leak_relu(pool)
    pool = self.pool_red_conv(pool)
    if self.training or self.pooling_size is None:
      pool = pool.repeat(1, 1, x.size(2), x.size(3))
    out += pool
    out = self.red_bn(out)
    out = self.leak_relu(out)
    return out

  def _global_pooling(self, x):
    # pooling_size is None in CPS and MGD: the other branch (a sliding average) never runs.
    pool = x.view(x.size(0), x.size(1), -1).mean(dim=-1)
    pool = pool.view(x.size(0), x.size(1), 1, 1)
    return pool


class CPSHead(nn.Module):
  def __init__(self, classify_classes, norm_act=nn.BatchNorm2d, bn_momentum=0.0003, in_channels=2048,
               low_level_channels=256, reduce_channels=48):  # MGD's MobileNet HeadSmall: 320, 24, 24
    super(CPSHead, self).__init__()
    self.classify_classes = classify_classes
    self.aspp = CPSASPP(in_channels, 256, [6, 12, 18], norm_act=norm_act)
    self.reduce = nn.Sequential(
        nn.Conv2d(low_level_channels, reduce_channels, 1, bias=False),
        norm_act(reduce_channels, momentum=bn_momentum),
        nn.ReLU(),
    )
    self.last_conv = nn.Sequential(nn.Conv2d(256 + reduce_channels, 256, 3, stride=1, padding=1, bias=False),
                                   norm_act(256, momentum=bn_momentum),
                                   nn.ReLU(),
                                   nn.Conv2d(256, 256, kernel_size=3, stride=1, padding=1, bias=False),
                                   norm_act(256, momentum=bn_momentum),
                                   nn.ReLU(),
                                   )

  def forward(self, f_list):
    f = f_list[-1]
    f = self.aspp(f)
    low_level_features = f_list[0]
    low_h, low_w = low_level_features.size(2), low_level_features.size(3)
    low_level_features = self.reduce(low_level_features)
    f = F.interpolate(f, size=(low_h, low_w), mode='bilinear', align_corners=True)
    f = torch.cat((f, low_level_features), dim=1)
    f = self.last_conv(f)
    return f


def cps_init_weight(feature, conv_init, norm_layer, bn_eps, bn_momentum, **kwargs):
  """furnace/utils/init_func.py `__init_weight`, as train.py calls it on the business layers (head, classifier)."""
  for _name, m in feature.named_modules():
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
      conv_init(m.weight, **kwargs)
    elif isinstance(m, norm_layer):
      m.eps = bn_eps
      m.momentum = bn_momentum
      nn.init.constant_(m.weight, 1)
      nn.init.constant_(m.bias, 0)


class CPSSingleNetwork(nn.Module):
  """`SingleNetwork` (CPS, MGD's `SingleLargeNetwork`) or MGD's `SingleSmallNetwork` (basic blocks, stem width 32,
  HeadSmall), with `layers` blocks per stage; config.bn_eps 1e-5, config.bn_momentum 0.1."""

  def __init__(self, num_classes, block, layers, stem_width, head_channels):
    super().__init__()
    norm_layer = nn.BatchNorm2d
    self.backbone = CPSResNet(block, layers, norm_layer=norm_layer, bn_eps=1e-5, bn_momentum=0.1, deep_stem=True,
                              stem_width=stem_width)
    self.dilate = 2
    for m in self.backbone.layer4.children():
      m.apply(partial(self._nostride_dilate, dilate=self.dilate))
      self.dilate *= 2
    self.head = CPSHead(num_classes, norm_layer, 0.1, *head_channels)
    self.business_layer = []
    self.business_layer.append(self.head)
    self.classifier = nn.Conv2d(256, num_classes, kernel_size=1, bias=True)
    self.business_layer.append(self.classifier)
    for module in self.business_layer:
      cps_init_weight(module, nn.init.kaiming_normal_, norm_layer, 1e-5, 0.1, mode='fan_in', nonlinearity='relu')

  def forward(self, data):
    blocks = self.backbone(data)
    v3plus_feature = self.head(blocks)
    pred = self.classifier(v3plus_feature)
    b, c, h, w = data.shape
    return F.interpolate(pred, size=(h, w), mode='bilinear', align_corners=True)

  def _nostride_dilate(self, m, dilate):
    if isinstance(m, nn.Conv2d):
      if m.stride == (2, 2):
        m.stride = (1, 1)
        if m.kernel_size == (3, 3):
          m.dilation = (dilate, dilate)
          m.padding = (dilate, dilate)
      else:
        if m.kernel_size == (3, 3):
          m.dilation = (dilate, dilate)
          m.padding = (dilate, dilate)


# --- mmsegmentation: backbones/resnet.py (ResNetV1c's stem), necks/fpn.py, decode_heads/fpn_head.py and
# decode_head.py, mmcv's ConvModule with its default init, transcribed for fpn_r50.py's settings. ---

class MMConvModule(nn.Module):
  """mmcv ConvModule, order (conv, norm, act): bias only without a norm; `kaiming_init` (fan_out, normal), norm
  weight 1 / bias 0."""

  def __init__(self, in_channels, out_channels, kernel_size, padding=0, norm=True, act=True):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=not norm)
    self.with_norm, self.with_activation = norm, act
    if norm:
      self.bn = nn.BatchNorm2d(out_channels)
    if act:
      self.activate = nn.ReLU(inplace=True)
    nn.init.kaiming_normal_(self.conv.weight, a=0, mode='fan_out', nonlinearity='relu')
    if self.conv.bias is not None:
      nn.init.constant_(self.conv.bias, 0)
    if norm:
      nn.init.constant_(self.bn.weight, 1)
      nn.init.constant_(self.bn.bias, 0)

  def forward(self, x):
    x = self.conv(x)
    if self.with_norm:
      x = self.bn(x)
    if self.with_activation:
      x = self.activate(x)
    return x


def mm_resize(input, size=None, scale_factor=None, mode='nearest', align_corners=None):
  return F.interpolate(input, size, scale_factor, mode, align_corners)


class MMUpsample(nn.Module):
  def __init__(self, size=None, scale_factor=None, mode='nearest', align_corners=None):
    super(MMUpsample, self).__init__()
    self.size = size
    self.scale_factor = float(scale_factor) if scale_factor else None
    self.mode = mode
    self.align_corners = align_corners

  def forward(self, x):
    if not self.size:
      size = [int(t * self.scale_factor) for t in x.shape[-2:]]
    else:
      size = self.size
    return mm_resize(x, size, None, self.mode, self.align_corners)


class MMResNetV1c(nn.Module):
  """ResNetV1c: the deep stem (stem_channels 64: 32, 32, 64), max pooling, torchvision's bottleneck stages
  (style 'pytorch', mmseg's Bottleneck with the same names), out_indices (0, 1, 2, 3)."""

  def __init__(self, layers, stem_channels=64):
    super().__init__()
    self.stem = nn.Sequential(
        nn.Conv2d(3, stem_channels // 2, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(stem_channels // 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_channels // 2, stem_channels // 2, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(stem_channels // 2),
        nn.ReLU(inplace=True),
        nn.Conv2d(stem_channels // 2, stem_channels, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(stem_channels),
        nn.ReLU(inplace=True))
    self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    body = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, layers)
    self.res_layers = ["layer1", "layer2", "layer3", "layer4"]
    for name in self.res_layers:
      self.add_module(name, getattr(body, name))

  def forward(self, x):
    x = self.stem(x)
    x = self.maxpool(x)
    outs = []
    for layer_name in self.res_layers:
      x = getattr(self, layer_name)(x)
      outs.append(x)
    return tuple(outs)


class MMFPN(nn.Module):
  """necks/fpn.py with start_level 0, no extra convs, num_outs = inputs; init_cfg Xavier (uniform) on the convs."""

  def __init__(self, in_channels, out_channels, num_outs, upsample_cfg=dict(mode='nearest')):  # noqa: B006
    super(MMFPN, self).__init__()
    self.in_channels = in_channels
    self.num_outs = num_outs
    self.upsample_cfg = upsample_cfg.copy()
    self.lateral_convs = nn.ModuleList()
    self.fpn_convs = nn.ModuleList()
    for i in range(len(in_channels)):
      l_conv = MMConvModule(in_channels[i], out_channels, 1, norm=False, act=False)
      fpn_conv = MMConvModule(out_channels, out_channels, 3, padding=1, norm=False, act=False)
      self.lateral_convs.append(l_conv)
      self.fpn_convs.append(fpn_conv)
    for m in self.modules():  # BaseModule.init_weights with init_cfg=dict(type='Xavier', layer='Conv2d', ...)
      if isinstance(m, nn.Conv2d):
        nn.init.xavier_uniform_(m.weight, gain=1)
        nn.init.constant_(m.bias, 0)

  def forward(self, inputs):
    laterals = [lateral_conv(inputs[i]) for i, lateral_conv in enumerate(self.lateral_convs)]
    used_backbone_levels = len(laterals)
    for i in range(used_backbone_levels - 1, 0, -1):
      prev_shape = laterals[i - 1].shape[2:]
      laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=prev_shape, **self.upsample_cfg)
    outs = [self.fpn_convs[i](laterals[i]) for i in range(used_backbone_levels)]
    return tuple(outs)


class MMFPNHead(nn.Module):
  """decode_heads/fpn_head.py on BaseDecodeHead (channels, Dropout2d, conv_seg with N(0, 0.01) init)."""

  def __init__(self, feature_strides, in_channels, channels, num_classes, dropout_ratio=0.1, align_corners=False):
    super(MMFPNHead, self).__init__()
    self.in_channels, self.channels, self.align_corners = in_channels, channels, align_corners
    self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
    self.dropout = nn.Dropout2d(dropout_ratio)
    nn.init.normal_(self.conv_seg.weight, 0, 0.01)
    nn.init.constant_(self.conv_seg.bias, 0)
    assert len(feature_strides) == len(self.in_channels)
    assert min(feature_strides) == feature_strides[0]
    self.feature_strides = feature_strides
    self.scale_heads = nn.ModuleList()
    for i in range(len(feature_strides)):
      head_length = max(1, int(np.log2(feature_strides[i]) - np.log2(feature_strides[0])))
      scale_head = []
      for k in range(head_length):
        scale_head.append(MMConvModule(self.in_channels[i] if k == 0 else self.channels, self.channels, 3,
                                       padding=1))
        if feature_strides[i] != feature_strides[0]:
          scale_head.append(MMUpsample(scale_factor=2, mode='bilinear', align_corners=self.align_corners))
      self.scale_heads.append(nn.Sequential(*scale_head))

  def forward(self, inputs):
    x = inputs
    output = self.scale_heads[0](x[0])
    for i in range(1, len(self.feature_strides)):
      output = output + mm_resize(self.scale_heads[i](x[i]), size=output.shape[2:], mode='bilinear',
                                  align_corners=self.align_corners)
    return self.cls_seg(output)

  def cls_seg(self, feat):
    if self.dropout is not None:
      feat = self.dropout(feat)
    return self.conv_seg(feat)


class MMSemanticFPN(nn.Module):
  """EncoderDecoder with fpn_r50.py's backbone, neck and decode head; `predict` resizes to the input."""

  def __init__(self, layers, num_classes):
    super().__init__()
    self.backbone = MMResNetV1c(layers)
    self.neck = MMFPN([256, 512, 1024, 2048], 256, 4)
    self.decode_head = MMFPNHead([4, 8, 16, 32], [256, 256, 256, 256], 128, num_classes)

  def forward(self, x):
    seg_logits = self.decode_head(self.neck(self.backbone(x)))
    return mm_resize(seg_logits, size=x.shape[2:], mode='bilinear', align_corners=False)


# --- The tests. ---

@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_matches_interpolate(align_corners):
  rng = np.random.default_rng(0)
  for (h, w), size in [((5, 7), (17, 23)), ((17, 17), (65, 65)), ((9, 5), (17, 9)), ((33, 21), (9, 5)),
                       ((1, 1), (6, 4)), ((6, 5), (1, 1)), ((8, 8), (8, 8))]:
    x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
    theirs = nhwc(F.interpolate(nchw(x), size=size, mode="bilinear", align_corners=align_corners))
    np.testing.assert_allclose(resize_bilinear(jnp.asarray(x), size, align_corners), theirs, atol=1e-5, rtol=0,
                               err_msg=f"{(h, w)} -> {size}")


# timm's `output_stride` is the same rule as torchvision's replace_stride_with_dilation (ResNet) and VainF's
# MobileNet v2 (the depthwise convs); the basic block dilates conv1 at the previous rate, conv2 at the new one.
# Output stride 8: the rule at two stages (the second one's first block at rate 2, the others at 4).
@pytest.mark.parametrize("name, output_stride, options", [("resnet18", 8, {}), ("mobilenetv2_100", 8, {})])
def test_dilated_backbones_match_timm(name, output_stride, options):
  reference = randomized_timm(name, output_stride=output_stride, **options)
  state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
  model, variables = convert_timm(name, state_dict, image_size=65, output_stride=output_stride, **options)
  x = images(65)
  logits, features = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  assert features["C5"].shape[1] == math.ceil(65 / output_stride)
  with torch.no_grad():
    if name.startswith("mobilenet"):  # timm's forward_features ends with the 1280-channel head conv: the logits
      assert_close(logits, reference(nchw(x)).numpy(), name)
    else:
      assert_close(features["C5"], nhwc(reference.forward_features(nchw(x))), name)


def test_deeplabv3_resnet50_matches_torchvision():
  reference = randomize(torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None,
                                                                           aux_loss=True))
  model = create_model("deeplabv3_resnet50", aux=True)
  x = images(65)
  variables = load(model, reference, (x,), torchvision_key)
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  with torch.no_grad():
    theirs = reference(nchw(x))
  assert_close(out["logits"], nhwc(theirs["out"]), "out")
  assert_close(out["aux_logits"], nhwc(theirs["aux"]), "aux")


# VainF's default output stride 16 (torchvision's deeplabv3 above runs at 8), two blocks in the dilated stage, so
# both its first block (previous rate) and the other (new rate) run.
@pytest.mark.parametrize("output_stride", [16])
def test_deeplabv3plus_matches_vainf(output_stride):
  reference = randomize(VainFDeepLabV3Plus([1, 1, 2, 2], 21, output_stride))
  model = create_model("deeplabv3plus_resnet50", variant="standard", output_stride=output_stride,
                       body_options={"layers": (1, 1, 2, 2)})
  x = images(65)
  variables = load(model, reference, (x,))
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  with torch.no_grad():
    theirs = reference(nchw(x))
  assert_close(out["logits"], nhwc(theirs))


# MGD's ResNet-18 student (stem width 32, basic blocks: both 3x3s dilated, rates 2 and 4) at full depth; CPS's /
# MGD's ResNet-101 teacher with one block per stage but layer4's three (rates 2, 4, 8).
@pytest.mark.parametrize("name, block, layers, stem_width, head_channels", [
    ("deeplabv3plus_resnet18", CPSBasicBlock, (2, 2, 2, 2), 32, (512, 64)),
    ("deeplabv3plus_resnet101", CPSBottleneck, (1, 1, 1, 3), 64, (2048, 256))])
def test_deeplabv3plus_matches_cps(name, block, layers, stem_width, head_channels):
  reference = randomize(CPSSingleNetwork(21, block, list(layers), stem_width, head_channels))
  model = create_model(name, body_options={"layers": layers})
  assert model.variant == "cps"
  x = images(65)
  variables = load(model, reference, (x,))
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  with torch.no_grad():
    theirs = reference(nchw(x))
  assert_close(out["logits"], nhwc(theirs))


def test_semantic_fpn_matches_mmseg():
  reference = randomize(MMSemanticFPN([1, 1, 1, 1], 19))
  model = create_model("semantic_fpn_resnet50", body_options={"layers": (1, 1, 1, 1)})
  x = images(65)  # odd at every stride: the neck's nearest and the head's bilinear resizes meet uneven sizes
  variables = load(model, reference, (x,), mmseg_key)
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  with torch.no_grad():
    theirs = reference(nchw(x))
  assert_close(out["logits"], nhwc(theirs))


# The heads alone on maps wider than every atrous rate, so each tap of the dilated 3x3s reaches real pixels (in
# the whole-model tests above most of them fall on the padding).
def head_maps(high_channels, low_channels, side=24):
  rng = np.random.default_rng(1)
  return (rng.normal(size=(1, 2 * side, 2 * side, low_channels)).astype(np.float32),
          rng.normal(size=(1, side, side, high_channels)).astype(np.float32))


def test_heads_match_on_large_maps():
  low, high = head_maps(64, 24)
  # VainF's DeepLabV3Plus head (output stride 16 rates) and CPS's head (MGD's HeadSmall widths, rate 18 < 24 px).
  vainf = randomize(VainFDeepLabHeadV3Plus(64, 24, 5, [6, 12, 18]))
  ours = DeepLabV3PlusHead(5, (6, 12, 18))
  variables = load(ours, vainf, (low, high), train=False)
  with torch.no_grad():
    theirs = vainf({"low_level": nchw(low), "out": nchw(high)})
  assert_close(jax.jit(partial(ours.apply, train=False))(variables, low, high), nhwc(theirs), "vainf")

  cps = randomize(CPSHead(5, nn.BatchNorm2d, 0.1, 64, 24))
  ours = DeepLabV3PlusHead(0, (6, 12, 18), "cps", aspp_dropout=0.0, decoder_convs=2)
  variables = load(ours, cps, (low, high), train=False)
  with torch.no_grad():
    theirs = cps([nchw(low), None, None, nchw(high)])
  assert_close(jax.jit(partial(ours.apply, train=False))(variables, low, high), nhwc(theirs), "cps")

  tv = randomize(torchvision.models.segmentation.deeplabv3.DeepLabHead(64, 5, (12, 24, 36)))
  aspp = FlaxASPP((12, 24, 36), 256, dropout=0.5)
  ours = ConvBNSeq(256, 3, first=1, pre=aspp, num_classes=5)
  variables = load(ours, tv, (high,), train=False)
  with torch.no_grad():
    theirs = tv(nchw(high))
  assert_close(jax.jit(partial(ours.apply, train=False))(variables, high), nhwc(theirs), "torchvision")


# Initialisation: each head's weights, freshly initialised, have the spread of the reference's own init (sample
# standard deviations within 10% for tensors of at least 1000 values; BatchNorm 1 / 0, biases of the same kind).
def init_stats_agree(ours, reference, inputs, key=timm_key, **kwargs):
  # The 'rbg' generator: the same distributions, and it compiles in half the time of threefry on CPUs.
  variables = jax.jit(partial(ours.init, **kwargs))(jax.random.key(0, impl="rbg"), *inputs)
  theirs = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
  checked = 0
  for path, value in jax.tree_util.tree_flatten_with_path(variables["params"])[0]:
    name = key("params", path_str(path))
    a, b = np.asarray(value), theirs[name]
    assert a.size == b.size, name
    if name.endswith("bias") or b.ndim == 1:
      if np.all(b == b.flat[0]):  # BN scale 1, BN shift 0, zero biases
        assert np.all(a == b.flat[0]), name
      else:  # PyTorch's default bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        bound = np.abs(b).max() * 1.5
        assert 0 < np.abs(a).max() <= bound, name
    elif b.size >= 1000:
      assert abs(a.std() / b.std() - 1) < 0.1 and abs(a.mean()) < 0.1 * a.std(), (name, a.std(), b.std())
      checked += 1
  assert checked >= 2
  return checked


def test_init_statistics_match_the_references():
  # Input widths below the real ones (the spreads depend on them only through fan_in, which both sides share):
  # initialising 14M ASPP weights at 2048 channels takes JAX's CPU RNG 10 s.
  torch.manual_seed(0)
  low, high = (x[:, :4, :4] for x in head_maps(256, 64, side=4))
  init_stats_agree(DeepLabV3PlusHead(21, (6, 12, 18)), VainFDeepLabHeadV3Plus(256, 64, 21, [6, 12, 18]),
                   (low, high), train=False)
  network = CPSSingleNetwork(21, CPSBasicBlock, [1, 1, 1, 1], 32, (256, 64))
  init_stats_agree(DeepLabV3PlusHead(0, (6, 12, 18), "cps", aspp_dropout=0.0, decoder_convs=2), network.head,
                   (low, high), train=False)
  # The CPS classifier (kernel N(0, 2 / 256)) outside the head, and torchvision's DeepLabHead / FCNHead (PyTorch's
  # default init).
  feature = np.zeros((1, 2, 2, 256), np.float32)
  variables = classifier_conv(21, 256, "kaiming", jnp.float32).init(jax.random.key(1, impl="rbg"), feature)
  ratio = np.asarray(variables["params"]["kernel"]).std() / network.classifier.weight.detach().numpy().std()
  assert abs(ratio - 1) < 0.1
  aspp = FlaxASPP((12, 24, 36), 256, dropout=0.5)
  init_stats_agree(ConvBNSeq(256, 3, first=1, pre=aspp, num_classes=21),
                   torchvision.models.segmentation.deeplabv3.DeepLabHead(256, 21), (high,), train=False)
  init_stats_agree(fcn_head("torchvision", 21, 64, 0.9, jnp.float32),
                   torchvision.models.segmentation.fcn.FCNHead(256, 21), (high,), train=False)
  # mmseg: the FPN neck (Xavier-uniform) and the FPNHead (ConvModules Kaiming fan_out, conv_seg N(0, 0.01)).
  widths = (64, 128, 256, 512)
  levels = [np.zeros((1, s, s, c), np.float32) for s, c in zip((8, 4, 2, 1), widths)]
  init_stats_agree(FlaxFPN(256, "none", weight_init="mmseg"), MMFPN(list(widths), 256, 4), (levels,), key=mmseg_key)
  pyramid = [np.zeros((1, s, s, 256), np.float32) for s in (8, 4, 2, 1)]
  init_stats_agree(FlaxFPNHead(19), MMFPNHead([4, 8, 16, 32], [256] * 4, 128, 19), (pyramid,), train=False)
