"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) on ResNet-50-FPN,
torchvision's network (parity: tests/parity/test_parity_retinanet.py), on the detection trainer
(inception_zoo/train/detection.py).

CPU setting: a quarter-width ResNet-50-FPN RetinaNet on generated shapes at 96 px (4 classes), 2,000 steps:
  python -m experiments.retinanet --config=runlocal --workdir=workdirs/retinanet_shapes
Full setting: RetinaNet R50-FPN 1x on COCO 2017 (torchvision's reference: SGD 0.01 at batch 16, 90k
iterations, x0.1 at 60k and 80k, 500 warm-up iterations, 800 / 1333 px, an ImageNet ResNet-50):
  python -m experiments.retinanet --workdir=WORKDIR --config.input.data_dir=COCO_DIR --config.init_from=R50_DIR
"""
import ml_collections

from experiments.common import coco_detection, shapes_detection
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.train import detection


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = detection.base_config()
  c.model_name = "retinanet_resnet50_fpn"
  c.eval.iou_types = ("bbox",)
  if arg == "runlocal":
    c.name = "retinanet_shapes"
    # One block per stage, and anchors of 8..203 px (torchvision's 32..812 quartered): the shapes are 3-40 px.
    c.model = ml_collections.ConfigDict(dict(
        body_options=dict(layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16), frozen_bn=False,
        fpn_channels=64, topk_candidates=300, detections_per_img=100,
        anchor_sizes=tuple(tuple(int(s * 2 ** (k / 3)) for k in range(3)) for s in (8, 16, 32, 64, 128))))
    shapes_detection(c)
    c.total_steps = 2000
    c.schedule.update(base_lr=0.02, warmup_epochs=0.25, milestones=(6.5,))
    c.log_every = 50
    c.checkpoint_every = 1000
    c.mesh.data = 1
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = RetinaNet R50-FPN 1x on COCO)")
  c.name = "retinanet_r50_fpn_1x_coco"
  coco_detection(c, base_lr=0.01)
  c.eval.max_per_image = 300  # torchvision's detections_per_img for RetinaNet
  return c


def main(argv=None):
  return run_experiment(get_config, detection.train_and_evaluate, argv)


if __name__ == "__main__":
  main()
