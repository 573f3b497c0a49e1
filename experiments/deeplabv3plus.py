"""DeepLabV3+ (Chen et al., ECCV 2018) in CPS's layout (deep-stem ResNet at output stride 16, the network MGD and
CPS train; parity: tests/parity/test_parity_segmentation.py), on the segmentation trainer
(inception_zoo/train/segmentation.py), with CPS / TorchSemiSeg's supervised recipes.

CPU setting: a quarter-width DeepLabV3+ ResNet-18 on generated shapes at 96 px (5 classes with the background):
  python -m experiments.deeplabv3plus --config=runlocal --workdir=workdirs/deeplabv3plus_shapes
Full settings (an ImageNet ResNet-101 converted by inception_zoo.convert for `init_from`):
  VOC 2012 + SBD (10,582 images; CPS's `DATA/pascal_voc` layout): SGD 0.005 at batch 16, poly 0.9, weight
  decay 1e-4 (not on norms and biases), 34 epochs, random scale (0.5-2.0 of the image) / 512 crop / flip,
  sliding-window evaluation (512, stride 341), as CPS's exp.voc config:
    python -m experiments.deeplabv3plus --workdir=WORKDIR --config.input.data_dir=VOC_DIR --config.init_from=R101_DIR
  Cityscapes (2,975 fine images): SGD 0.04 at batch 16, 137 epochs, 800 crops, OHEM (0.7), as CPS's exp.city:
    python -m experiments.deeplabv3plus --config=cityscapes --workdir=WORKDIR --config.input.data_dir=CITYSCAPES_DIR
  (`--config.input.train_split=labeled_1-8` trains on a semi-supervised partition's labelled images.)
"""
import ml_collections

from experiments.common import shapes_segmentation
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.train import segmentation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = segmentation.base_config()
  c.model_name = "deeplabv3plus_resnet101"
  if arg == "runlocal":
    c.name = "deeplabv3plus_shapes"
    c.model_name = "deeplabv3plus_resnet18"
    c.model = ml_collections.ConfigDict(dict(
        body_options=dict(channels=(16, 32, 64, 128), stem_width=8), aspp_channels=64, low_level_channels=16,
        decoder_channels=64))
    shapes_segmentation(c)
    c.total_steps = 500
    c.optimizer.update(wd_mask="no_norm_bias")
    c.schedule.update(base_lr=0.05, warmup_epochs=0.2)
    c.log_every = 50
    c.checkpoint_every = 500
    c.mesh.data = 1
    return c
  if arg not in (None, "cityscapes"):
    raise UserError(f"unknown setting '{arg}' (runlocal, cityscapes, or none = DeepLabV3+ R101 on VOC aug)")
  crop, base_lr, epochs = (800, 0.04, 137) if arg == "cityscapes" else (512, 0.005, 34)
  c.name = f"deeplabv3plus_r101_cps_{'cityscapes' if arg else 'voc_aug'}"
  train = (f"decode|seg_random_scale|seg_random_crop({crop}, 1.0)|seg_flip|normalize|seg_pad({crop})|seg_pack")
  c.input.update(data="cityscapes" if arg else "voc_aug", train_split="train", eval_split="val", batch_size=16,
                 eval_batch_size=1, pp_train=train, pp_eval="decode|normalize|seg_pack", num_threads=32)
  c.num_epochs = epochs
  c.optimizer.update(name="sgd", momentum=0.9, weight_decay=1e-4, wd_mask="no_norm_bias")
  c.schedule.update(name="poly", base_lr=base_lr, power=0.9)
  c.eval.update(mode="slide", crop=(crop, crop), stride=(crop * 2 // 3, crop * 2 // 3))
  if arg == "cityscapes":  # CPS's ProbOhemCrossEntropy2d: 50,000 pixels per image of the batch at least
    c.loss.update(ohem_thresh=0.7, ohem_min_kept=50_000 * 16)
  c.log_every = 100
  c.eval_every = 5_000
  c.checkpoint_every = 2_500
  return c


def main(argv=None):
  return run_experiment(get_config, segmentation.train_and_evaluate, argv)


if __name__ == "__main__":
  main()
