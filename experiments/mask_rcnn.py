"""Mask R-CNN (He et al., ICCV 2017) and Faster R-CNN (Ren et al., NeurIPS 2015) on ResNet-50-FPN (Lin et
al., CVPR 2017), torchvision's networks (parity: tests/parity/test_parity_rcnn.py), on the detection
trainer (inception_zoo/train/detection.py).

CPU setting: a quarter-width ResNet-50-FPN Mask R-CNN on generated shapes at 96 px (4 classes):
  python -m experiments.mask_rcnn --config=runlocal --workdir=workdirs/mask_rcnn_shapes
Full setting: Mask R-CNN R50-FPN 1x on COCO 2017 (SGD 0.02 at batch 16, 90k iterations, x0.1 at 60k and
80k, 500 warm-up iterations, 800 / 1333 px, an ImageNet ResNet-50 converted by inception_zoo.convert):
  python -m experiments.mask_rcnn --workdir=WORKDIR --config.input.data_dir=COCO_DIR --config.init_from=R50_DIR
  (--config=faster_rcnn: the same without the mask branch)
"""
import ml_collections

from experiments.common import coco_detection, shapes_detection
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.train import detection


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = detection.base_config()
  c.model_name = "maskrcnn_resnet50_fpn"
  if arg == "runlocal":
    c.name = "mask_rcnn_shapes"
    # Quarter width, one block per stage, fewer proposals and sampled RoIs: what 2 cores train in minutes.
    c.model = ml_collections.ConfigDict(dict(
        body_options=dict(layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16), frozen_bn=False,
        fpn_channels=64, representation_size=256, mask_layers=(64, 64), mask_dim_reduced=64, paste_masks=False,
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100, box_batch_size_per_image=64))
    shapes_detection(c)
    c.total_steps = 600
    c.schedule.update(base_lr=0.02, warmup_epochs=0.25, milestones=(2.0,))
    c.log_every = 50
    c.checkpoint_every = 600
    c.mesh.data = 1
    return c
  if arg not in (None, "faster_rcnn"):
    raise UserError(f"unknown setting '{arg}' (runlocal, faster_rcnn, or none = Mask R-CNN R50-FPN 1x on COCO)")
  c.name = "mask_rcnn_r50_fpn_1x_coco"
  c.model = ml_collections.ConfigDict(dict(paste_masks=False))
  if arg == "faster_rcnn":
    c.name, c.model_name = "faster_rcnn_r50_fpn_1x_coco", "fasterrcnn_resnet50_fpn"
    c.model = ml_collections.ConfigDict()
    c.eval.iou_types = ("bbox",)
  coco_detection(c, base_lr=0.02)
  return c


def main(argv=None):
  return run_experiment(get_config, detection.train_and_evaluate, argv)


if __name__ == "__main__":
  main()
