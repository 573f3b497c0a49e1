"""Detectors on registered backbones: FPN, RPN, Faster / Mask R-CNN, RetinaNet (torchvision's layout)."""
from inception_zoo.models.detection import rcnn, retinanet  # noqa: F401  (registers the detectors)
