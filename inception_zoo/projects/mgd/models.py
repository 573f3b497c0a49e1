"""MGD's networks that the zoo's core lacks, as CPS-layout DeepLabV3+ (`DeepLab`, variant 'cps'; MGD's ResNet-18
student and ResNet-101 teacher are the core's `deeplabv3plus_resnet18` / `deeplabv3plus_resnet101`). Both return
{'logits', 'features'}, the latter MGD's `v3plus_feature` (the decoder's 256-channel output).

* `deeplabv3plus_mobilenetv2_mgd`: the MobileNet v2 student of JayQine/MGD-SSSS
  `voc8.mobilev2_deeplabv3plus/network.py` (`SingleSmallNetwork`, `HeadSmall`) on its `mobilenetv2.py`
  (torchvision's MobileNetV2 features without the 1280-channel conv): output stride 32, `_nostride_dilate` on
  features[15:18] (the last three blocks' depthwise convolutions at rates 2, 4, 8), ASPP(320 -> 256, rates 6, 12,
  18) on the last block, the low-level map the 24-channel stride-4 one, reduced 24 -> 24 (`reduce`), `last_conv`
  on 280 channels.
* `deeplabv3plus_wide_resnet50_2`: teacher 1, "WRN-34-2" in the paper (`SingleWideNetwork`, `Head`;
  `wide_resnet.py`'s `wide_resnet34_2` is timm's ResNet with bottlenecks [3, 4, 6, 3] at base width 128 and the
  7x7 stem, i.e. timm's `wide_resnet50_2`): layer4 dilated 2, 4, 8 (output stride 16), ASPP 2048 -> 256, reduce
  256 -> 48, two 3x3 convolutions at 256.
"""
from inception_zoo.models.segmentation.deeplab import DeepLab, DeepLabMobileNet, _deeplab
from inception_zoo.registry import register_model


@register_model(tags=("segmentation",))
def deeplabv3plus_mobilenetv2_mgd(**kwargs) -> DeepLabMobileNet:
  """MGD's MobileNet v2 student (`voc8.mobilev2_deeplabv3plus/network.py`): output stride 32, the last three
  blocks dilated 2, 4, 8, ASPP rates (6, 12, 18), the low-level map reduced to 24 channels. 5,759,619 parameters
  with 19 classes (5,760,133 with 21): the official module's less the 1280 -> 1000 classifier it builds, never runs."""
  body_options = {"head_chs": 0, "tail_dilations": (2, 4, 8), **(kwargs.pop("body_options", None) or {})}
  return _deeplab(DeepLabMobileNet, kwargs, body="mobilenetv2_100", variant="cps", output_stride=32,
                  aspp_rates=(6, 12, 18), low_level_channels=24, body_options=body_options)


@register_model(tags=("segmentation",))
def deeplabv3plus_wide_resnet50_2(**kwargs) -> DeepLab:
  """MGD's teacher 1, "WRN-34-2" (`SingleWideNetwork`): timm's Wide ResNet-50-2 with its 7x7 stem, layer4 at
  rates 2, 4, 8 (output stride 16), CPS's head. 83,677,875 parameters with 19 classes (83,678,389 with 21): the
  official module's less timm's unused `fc`."""
  body_options = {"stem_type": "", **(kwargs.pop("body_options", None) or {})}
  return _deeplab(DeepLab, kwargs, body="wide_resnet50_2", variant="cps", body_options=body_options)
