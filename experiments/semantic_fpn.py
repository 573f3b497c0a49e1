"""Semantic FPN (Kirillov, Girshick, He, Dollar, "Panoptic Feature Pyramid Networks", CVPR 2019: the
semantic branch) on ResNet-50, mmseg's `fpn_r50` network (parity: tests/parity/test_parity_segmentation.py),
on the segmentation trainer (inception_zoo/train/segmentation.py). DenseCLIP's baseline.

CPU setting: a quarter-width Semantic FPN on generated shapes at 96 px (5 classes with the background):
  python -m experiments.semantic_fpn --config=runlocal --workdir=workdirs/semantic_fpn_shapes
Full setting: ADE20K 512 x 512, 80k iterations at batch 32, AdamW 1e-4 (weight decay 1e-4), poly 0.9 after
1,500 linear warm-up iterations, sliding-window evaluation (512, stride 341), as DenseCLIP's Table 1
baselines (an ImageNet ResNet-50 converted by inception_zoo.convert):
  python -m experiments.semantic_fpn --workdir=WORKDIR --config.input.data_dir=ADE_DIR --config.init_from=R50_DIR
"""
import ml_collections

from experiments.common import ADE20K_TRAIN_IMAGES, ade20k_segmentation, shapes_segmentation
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.train import segmentation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = segmentation.base_config()
  c.model_name = "semantic_fpn_resnet50"
  if arg == "runlocal":
    c.name = "semantic_fpn_shapes"
    c.model = ml_collections.ConfigDict(dict(
        body_options=dict(layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16), fpn_channels=64,
        channels=64))
    shapes_segmentation(c)
    c.total_steps = 500
    c.optimizer.update(name="adamw", weight_decay=1e-4, wd_mask="no_norm_bias")
    c.schedule.update(base_lr=2e-3, warmup_epochs=0.2)
    c.log_every = 50
    c.checkpoint_every = 500
    c.mesh.data = 1
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = Semantic FPN R50 on ADE20K, 80k iterations)")
  c.name = "semantic_fpn_r50_512x512_80k_ade20k"
  ade20k_segmentation(c)
  c.optimizer.update(name="adamw", weight_decay=1e-4, wd_mask=r".*")
  c.schedule.update(name="poly", base_lr=1e-4, power=0.9, end_lr_fraction=0.01,  # mmseg's min_lr 1e-6
                    warmup_epochs=1_500 / (ADE20K_TRAIN_IMAGES / c.input.batch_size), warmup_from=1e-6)
  return c


def main(argv=None):
  return run_experiment(get_config, segmentation.train_and_evaluate, argv)


if __name__ == "__main__":
  main()
