"""MGD's networks that the core's CPS tests (test_parity_segmentation.py) do not cover equal the official PyTorch code
(JayQine/MGD-SSSS), in eval mode, with the same random weights: the MobileNet v2 student
(`voc8.mobilev2_deeplabv3plus/network.py` `SingleSmallNetwork` + `HeadSmall` on its `mobilenetv2.py`) and teacher 1,
"WRN-34-2" (`SingleWideNetwork` + `Head` on `wide_resnet.py`'s `wide_resnet34_2`, a copy of timm's ResNet: timm's
class here, with the copy's forward). Both the logits and the decoder's output (`v3plus_feature`, our 'features') agree
within 1e-4 x their largest magnitude; the parameter counts at full size equal the official modules' less the
ImageNet classifier their backbones build and never run."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from test_parity_segmentation import CPSHead, CPSSingleNetwork, assert_close, images, nchw, nhwc
from timm.models.resnet import Bottleneck as TimmBottleneck
from timm.models.resnet import ResNet as TimmResNet
from timm_helpers import randomize

from inception_zoo import create_model
from inception_zoo.convert import state_dict_to_flax, timm_key

# --- MGD-SSSS voc8.mobilev2_deeplabv3plus/mobilenetv2.py (torchvision's MobileNetV2 with the forward returning the
# maps of features[3:], no 1280-channel conv in `features`), transcribed for the configuration MGD builds. ---

def mgd_make_divisible(v, divisor, min_value=None):
  if min_value is None:
    min_value = divisor
  new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


class MGDConvNormActivation(nn.Sequential):
  def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, groups=1,
               norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU, dilation=1, inplace=True):
    if padding is None:
      padding = (kernel_size - 1) // 2 * dilation
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation, groups=groups,
                        bias=norm_layer is None)]
    if norm_layer is not None:
      layers.append(norm_layer(out_channels))
    if activation_layer is not None:
      layers.append(activation_layer(inplace=inplace))
    super().__init__(*layers)
    self.out_channels = out_channels


class MGDInvertedResidual(nn.Module):
  def __init__(self, inp, oup, stride, expand_ratio, dilation=1, norm_layer=None):
    super().__init__()
    self.stride = stride
    assert stride in [1, 2]
    if norm_layer is None:
      norm_layer = nn.BatchNorm2d
    hidden_dim = int(round(inp * expand_ratio))
    self.use_res_connect = self.stride == 1 and inp == oup
    layers = []
    if expand_ratio != 1:
      layers.append(MGDConvNormActivation(inp, hidden_dim, kernel_size=1, dilation=dilation, norm_layer=norm_layer,
                                          activation_layer=nn.ReLU6))
    layers.extend([
        MGDConvNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, dilation=dilation,
                              norm_layer=norm_layer, activation_layer=nn.ReLU6),
        nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
        norm_layer(oup),
    ])
    self.conv = nn.Sequential(*layers)
    self.out_channels = oup
    self._is_cn = stride > 1

  def forward(self, x):
    if self.use_res_connect:
      return x + self.conv(x)
    else:
      return self.conv(x)


class MGDMobileNetV2(nn.Module):
  def __init__(self, num_classes=1000, width_mult=1.0, round_nearest=8, dropout=0.2):
    super().__init__()
    block = MGDInvertedResidual
    norm_layer = nn.BatchNorm2d
    input_channel = 32
    last_channel = 1280
    inverted_residual_setting = [
        # t, c, n, s
        [1, 16, 1, 1],
        [6, 24, 2, 2],
        [6, 32, 3, 2],
        [6, 64, 4, 2],
        [6, 96, 3, 1],
        [6, 160, 3, 2],
        [6, 320, 1, 1],
    ]
    input_channel = mgd_make_divisible(input_channel * width_mult, round_nearest)
    self.last_channel = mgd_make_divisible(last_channel * max(1.0, width_mult), round_nearest)
    features = [MGDConvNormActivation(3, input_channel, stride=2, norm_layer=norm_layer, activation_layer=nn.ReLU6)]
    for t, c, n, s in inverted_residual_setting:
      output_channel = mgd_make_divisible(c * width_mult, round_nearest)
      for i in range(n):
        stride = s if i == 0 else 1
        features.append(block(input_channel, output_channel, stride, expand_ratio=t, norm_layer=norm_layer))
        input_channel = output_channel
    self.features = nn.Sequential(*features)
    # Built but never run: forward returns the feature maps.
    self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

  def forward(self, x):
    blocks = []
    for i, layer in enumerate(self.features):
      x = layer(x)
      if i > 2:
        blocks.append(x)
    return blocks


# --- MGD-SSSS network.py: `Head` and the MobileNet student's `HeadSmall` are test_parity_segmentation's `CPSHead`
# (the same code; HeadSmall with 320 / 24 / 24 channels: reduce 24 -> 24, last_conv on 280), and the
# `SingleSmallNetwork` / `SingleWideNetwork` wrapper (its forward's training-mode outputs, `v3plus_feature` and the
# prediction, returned in eval mode too). ---

class MGDSingleNetwork(nn.Module):
  """`backbone`, the modules `dilated(backbone)` each dilated by `_nostride_dilate` at 2, 4, 8, ..., `head`, the 1x1
  classifier; forward -> (v3plus_feature, pred)."""

  def __init__(self, num_classes, backbone, dilated, head):
    super().__init__()
    self.backbone = backbone
    self.dilate = 2
    for m in dilated(self.backbone):
      m.apply(partial(self._nostride_dilate, dilate=self.dilate))
      self.dilate *= 2
    self.head = head
    self.classifier = nn.Conv2d(256, num_classes, kernel_size=1, bias=True)

  def forward(self, data):
    blocks = self.backbone(data)
    v3plus_feature = self.head(blocks)
    pred = self.classifier(v3plus_feature)
    b, c, h, w = data.shape
    pred = F.interpolate(pred, size=(h, w), mode='bilinear', align_corners=True)
    return v3plus_feature, pred

  _nostride_dilate = CPSSingleNetwork._nostride_dilate


class MGDWideResNet(TimmResNet):
  """wide_resnet.py's `wide_resnet34_2`: timm's ResNet, Bottleneck, layers [3, 4, 6, 3], base_width 128; its
  forward returns layer1..layer4's maps."""

  def __init__(self, layers=(3, 4, 6, 3)):
    super().__init__(block=TimmBottleneck, layers=list(layers), base_width=128)

  def forward(self, x):
    x = self.conv1(x)
    x = self.bn1(x)
    x = self.act1(x)
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


def mgd_mobilenet_network(num_classes):
  return MGDSingleNetwork(num_classes, MGDMobileNetV2(), lambda backbone: backbone.features[15:18],
                          CPSHead(num_classes, nn.BatchNorm2d, 0.1, 320, 24, 24))  # HeadSmall


def mgd_wide_network(num_classes, layers=(3, 4, 6, 3)):
  return MGDSingleNetwork(num_classes, MGDWideResNet(layers), lambda backbone: backbone.layer4.children(),
                          CPSHead(num_classes, nn.BatchNorm2d, 0.1))


# Never run by the official forward: the backbones' ImageNet classifiers (timm's `fc`; the MobileNet's Linear(1280,
# 1000) after a dropout).
UNUSED = {"deeplabv3plus_mobilenetv2_mgd": ("backbone.classifier.1.weight", "backbone.classifier.1.bias"),
          "deeplabv3plus_wide_resnet50_2": ("backbone.fc.weight", "backbone.fc.bias")}
REFERENCES = {"deeplabv3plus_mobilenetv2_mgd": mgd_mobilenet_network, "deeplabv3plus_wide_resnet50_2": mgd_wide_network}

# Our MobileNet v2 is timm's (`blocks.<stage>.<block>`), the official one torchvision's (`features.<i>`, flat; the
# stem at 0): the stages' first indices, and each block kind's modules within a torchvision block.
MOBILENET_STAGE_START = (1, 2, 4, 7, 11, 14, 17)
MOBILENET_NAMES = {"ds": {"conv_dw": "conv/layers_0/layers_0", "bn1": "conv/layers_0/layers_1",
                          "conv_pw": "conv/layers_1", "bn2": "conv/layers_2"},
                   "ir": {"conv_pw": "conv/layers_0/layers_0", "bn1": "conv/layers_0/layers_1",
                          "conv_dw": "conv/layers_1/layers_0", "bn2": "conv/layers_1/layers_1",
                          "conv_pwl": "conv/layers_2", "bn3": "conv/layers_3"}}


def mgd_mobilenet_key(collection, path):
  """The official (torchvision-named) key of a `deeplabv3plus_mobilenetv2_mgd` leaf."""
  parts = path.split("/")
  if parts[:2] == ["backbone", "conv_stem"]:
    path = "/".join(["backbone/features/layers_0/layers_0"] + parts[2:])
  elif parts[:2] == ["backbone", "bn1"]:
    path = "/".join(["backbone/features/layers_0/layers_1"] + parts[2:])
  elif parts[:2] == ["backbone", "blocks"]:
    stage, block = (int(p[len("layers_"):]) for p in parts[2:4])
    module = MOBILENET_NAMES["ds" if stage == 0 else "ir"][parts[4]]
    path = "/".join([f"backbone/features/layers_{MOBILENET_STAGE_START[stage] + block}", module] + parts[5:])
  return timm_key(collection, path)


KEYS = {"deeplabv3plus_mobilenetv2_mgd": mgd_mobilenet_key, "deeplabv3plus_wide_resnet50_2": timm_key}


def load_official(name, model, reference, x):
  """Flax variables of `model` from the official network's state dict, strictly, the unused classifier left out."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  state_dict = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
  for key in UNUSED[name]:
    del state_dict[key]
  return state_dict_to_flax(state_dict, shapes, KEYS[name], "official")


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# The MobileNet student at full size on 289 px: odd at strides 2..16 (145, 73, 37, 19), so the symmetric padding of
# every strided convolution counts, and its last map (10 px) wider than rate 8, so the taps of every tail dilation
# (2, 4, 8) reach real pixels. WRN-34-2 with one block in layers 1-3 and layer4's three (rates 2, 4, 8) on 129 px
# (9 px at stride 16).
@pytest.mark.parametrize("name, size, options, reference_options", [
    ("deeplabv3plus_mobilenetv2_mgd", 289, {}, {}),
    ("deeplabv3plus_wide_resnet50_2", 129, {"body_options": {"layers": (1, 1, 1, 3)}}, {"layers": (1, 1, 1, 3)})])
def test_mgd_networks_match_the_official_code(name, size, options, reference_options):
  reference = randomize(REFERENCES[name](19, **reference_options))
  model = create_model(name, num_classes=19, **options)
  x = images(size)
  variables = load_official(name, model, reference, x)
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  with torch.no_grad():
    feature, pred = reference(nchw(x))
  assert_close(out["logits"], nhwc(pred), "logits")
  assert_close(out["features"], nhwc(feature), "v3plus_feature")


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_mgd_parameter_counts_match_the_official_code(name):
  """Full size, 19 classes (Cityscapes) and 21 (PASCAL VOC): ours equals the official module's parameters less its
  backbone's unused classifier; the BatchNorm statistics equal its running means and variances."""
  torch.manual_seed(0)
  for num_classes in (19, 21):
    reference = REFERENCES[name](num_classes)
    official = sum(p.numel() for p in reference.parameters())
    unused = sum(reference.state_dict()[k].numel() for k in UNUSED[name])
    stats = sum(t.numel() for k, t in reference.state_dict().items() if k.endswith(("running_mean", "running_var")))
    model = create_model(name, num_classes=num_classes)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert count(variables["params"]) == official - unused, (num_classes, official, unused)
    assert count(variables["batch_stats"]) == stats
