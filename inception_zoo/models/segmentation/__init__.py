"""Semantic segmentation on registered backbones: DeepLabV3 / DeepLabV3+ (torchvision's, VainF's and CPS / MGD's
layouts) and Semantic FPN (mmseg's). Models return {'logits': (B, H, W, classes)} at the input resolution."""
from inception_zoo.models.segmentation import deeplab, semantic_fpn  # noqa: F401  (registers the models)
