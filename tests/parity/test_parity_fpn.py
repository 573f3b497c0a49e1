"""FPN on ResNet-50 (Lin et al. 2017) equals torchvision's `resnet_fpn_backbone` (frozen BatchNorm, the
Mask R-CNN layout with the max-pool P6, and RetinaNet's P6 / P7 from P5) with the same weights: every
weight redrawn from N(0, 1/fan_in) and the frozen statistics randomised, so each level's maps spread."""
import jax
import numpy as np
import pytest
import torch
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone as tv_resnet_fpn_backbone
from timm_helpers import randomize
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from inception_zoo.convert import torchvision_detection_to_flax
from inception_zoo.models.detection.fpn import resnet_fpn_backbone

SIZE = 97  # odd at every stride, so the nearest upsampling meets sizes that are not multiples of 2


@pytest.mark.parametrize("extra", ["maxpool", "p6p7"])
def test_fpn_matches_torchvision(extra):
  levels = ("C2", "C3", "C4", "C5") if extra == "maxpool" else ("C3", "C4", "C5")
  kwargs = {} if extra == "maxpool" else dict(returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
  reference = randomize(tv_resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=3, **kwargs))
  model = resnet_fpn_backbone("resnet50", extra=extra, levels=levels)
  x = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  state_dict = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
  variables = torchvision_detection_to_flax(state_dict, shapes, bn_eps=1e-5)  # strict: all used, all filled
  ours = model.apply(variables, x)
  with torch.no_grad():
    theirs = list(reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).values())
  assert len(ours) == len(theirs) == 5
  for level, (a, b) in enumerate(zip(ours, theirs)):
    b = b.numpy().transpose(0, 2, 3, 1)
    scale = np.abs(b).max()
    assert a.shape == b.shape and scale > 0.1, (level, a.shape, b.shape, scale)
    np.testing.assert_allclose(a, b, atol=1e-4 * scale, rtol=0, err_msg=f"level {level}")
