"""MGD (Qin et al., ECCV 2022), paper 30 of the zoo: a lightweight DeepLabV3+ distilled on labelled and unlabelled
images from two frozen teachers at the pixel, image and region levels (inception_zoo/projects/mgd/, README.md
there: what is measured, and how).

CPU setting (~12 min): textured generated scenes, 1/16 of them labelled; two teachers pre-trained on the labelled
sixteenth, then a supervised-only, a pixel-level-only and an MGD student from the same start; seed 0 mIoU 0.677 /
0.684 / 0.666 (MGD does not beat supervised at this scale, over 3 seeds; the project README has them):
  python -m experiments.mgd --config=runlocal --workdir=workdirs/mgd_shapes
Full settings (official exp.city / exp.voc scripts; partitions with --config.input.train_split=labeled_1-16
--config.input.unlabeled_split=unlabeled_1-16; teachers: workdirs of experiments.deeplabv3plus runs of their
networks on the same partition):
  Cityscapes 1/8, ResNet-18 student (paper 1/16: +11.5 mIoU over its supervised baseline):
    python -m experiments.mgd --workdir=WORKDIR --config.input.data_dir=CITYSCAPES_DIR --config.init_from=R18_DIR \\
        --config.teachers.region.weights=WRN_DIR --config.teachers.image.weights=R101_DIR
  VOC 2012 + SBD 1/8, ResNet-18 or MobileNet-v2 student (paper, Cityscapes 1/16 MobileNet-v2: +4.6):
    python -m experiments.mgd --config=voc_r18 (or voc_mbv2) --workdir=WORKDIR --config.input.data_dir=VOC_DIR ...
"""
import ml_collections

from experiments.common import shapes_segmentation
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.mgd import run as mgd_run
from inception_zoo.projects.mgd import train as mgd
from inception_zoo.train import distill

SETTINGS = ("runlocal", "cityscapes_r18", "voc_r18", "voc_mbv2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = mgd.base_config()
  arg = arg or "cityscapes_r18"
  if arg not in SETTINGS:
    raise UserError(f"unknown setting '{arg}' ({', '.join(SETTINGS)}; none = cityscapes_r18)")
  if arg == "runlocal":
    c.name = "mgd_shapes"
    quarter = dict(body_options=dict(channels=(16, 32, 64, 128), stem_width=8), aspp_channels=64,
                   low_level_channels=16, decoder_channels=64)
    c.model = ml_collections.ConfigDict(quarter)
    shapes_segmentation(c, data="shapes_texture")
    c.input.update(train_split="labeled_1-16", unlabeled_split="unlabeled_1-16")
    # Complementary teachers as the paper's (wide WRN-34-2, deep ResNet-101), at CPU size: a ResNet-18 at 3/8
    # width and a ResNet-34 at the student's quarter width.
    wide = dict(quarter, body_options=dict(channels=(24, 48, 96, 192), stem_width=12), aspp_channels=96,
                decoder_channels=96)
    deep = dict(quarter, body_options=dict(quarter["body_options"], layers=(3, 4, 6, 3)))
    c.teachers = ml_collections.ConfigDict(dict(region=distill.teacher("deeplabv3plus_resnet18", **wide),
                                                image=distill.teacher("deeplabv3plus_resnet18", **deep)))
    c.prepare = ml_collections.ConfigDict(dict(teacher_steps=300, teacher_seeds=(10, 11)))
    c.total_steps = 200
    c.optimizer.update(wd_mask="no_norm_bias")
    c.schedule.update(base_lr=0.05, warmup_epochs=0.0)
    c.mgd.images_per_device = c.input.batch_size  # the image-level sum over the whole batch (one "GPU")
    c.log_every = 50
    c.checkpoint_every = 200
    c.mesh.data = 1
    return c
  city = arg.startswith("cityscapes")
  crop, epochs = (800, 137) if city else (512, 34)
  c.name = f"mgd_{arg}"
  c.model_name = "deeplabv3plus_mobilenetv2_mgd" if arg == "voc_mbv2" else "deeplabv3plus_resnet18"
  train = f"decode|seg_random_scale|seg_random_crop({crop}, 1.0)|seg_flip|normalize|seg_pad({crop})|seg_pack"
  c.input.update(data="cityscapes" if city else "voc_aug", train_split="labeled_1-8", unlabeled_split="unlabeled_1-8",
                 eval_split="val", batch_size=16 if city else 8, eval_batch_size=1, pp_train=train,
                 pp_eval="decode|normalize|seg_pack", num_threads=32)
  c.num_epochs = epochs  # over the unlabelled split (CPS's niters_per_epoch)
  # Official scripts: Cityscapes lr 0.02 on 8 GPUs x 2 images; VOC lr 0.0025 (R18) / 0.0035 (MBv2) x 4 GPUs x 2
  # images, weight decay 1e-4 off norms and biases. Their losses are all-reduced and divided by the GPU count
  # outside autograd, so every gradient is the mean loss's over the GPU count; SGD then takes the same steps
  # with lr / GPUs and weight decay x GPUs, which is what is set here.
  gpus, script_lr = {"cityscapes_r18": (8, 0.02), "voc_r18": (4, 0.01), "voc_mbv2": (4, 0.014)}[arg]
  c.optimizer.update(name="sgd", momentum=0.9, weight_decay=1e-4 * gpus, wd_mask="no_norm_bias")
  c.schedule.update(name="poly", base_lr=script_lr / gpus, power=0.9)
  c.eval.update(mode="slide", crop=(crop, crop), stride=(crop * 2 // 3, crop * 2 // 3))
  if city:  # ProbOhemCrossEntropy2d(thresh 0.7, min_kept 50,000 x batch / GPUs) per GPU
    c.loss.update(ohem_thresh=0.7, ohem_min_kept=50_000 * 16)
  else:  # the VOC scripts train the supervised term with plain cross-entropy
    c.mgd.update(image_weight=0.0005, region_weight=50.0)
  c.mgd.images_per_device = 2
  c.log_every = 100
  c.eval_every = 5_000
  c.checkpoint_every = 2_500
  return c


def main(argv=None):
  return run_experiment(get_config, mgd_run.train, argv)


if __name__ == "__main__":
  main()
