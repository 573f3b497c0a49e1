"""What the experiments' settings share: the CPU settings' embedded digits input, and for the full
ImageNet-1k settings the tfds loader, the preprocessing string built from each paper's choices, and the
logging / evaluation / checkpoint cadence of a long run."""
import ml_collections


def imagenet(c: ml_collections.ConfigDict, *, size: int, eval_resize: int, batch_size: int,
             num_epochs: float, crop: str = "", augment: str = "", erase: float = 0.0,
             bicubic: bool = False, norm: str = "value_range(-1, 1)"):
  """Trains on random-resized crops of `size` (`crop`: extra inception_crop arguments, e.g.
  "area_min=8") with flips, then RandAugment `augment` and random erasing `erase` if given; evaluates on
  the central `size` crop of images resized to `eval_resize` on the short side. `norm` is the final
  pixel op: [-1, 1] for networks trained here, "normalize" (ImageNet mean/std) for weights converted
  from timm's ResNets, MobileNets and EfficientNets."""
  method = ", method='bicubic'" if bicubic else ""
  crop = f"inception_crop({size}{', ' + crop if crop else ''}{method})"
  train = ["decode", crop, "flip_lr"] + ([f"randaugment('{augment}')"] if augment else [])
  train += [norm] + ([f"random_erase({erase})"] if erase else [])
  c.input.update(data="tfds:imagenet2012", train_split="train", eval_split="validation",
                 batch_size=batch_size, eval_batch_size=1000, num_threads=32, pp_train="|".join(train),
                 pp_eval=f"decode|resize_small({eval_resize}{method})|central_crop({size})|{norm}")
  c.num_epochs = num_epochs
  c.log_every = 100
  c.eval_every = 10_000
  c.checkpoint_every = 5_000


def swinv2_digits(c: ml_collections.ConfigDict):
  """The Swin V2 of the CPU settings (experiments.swinv2's classifier, experiments.simmim_swinv2's
  pre-training) on 32 px digits: 4x4 patches, widths 48 / 96, 4x4 windows."""
  c.model_name = "swinv2_tiny_window8_256"
  c.model = ml_collections.ConfigDict(dict(img_size=32, patch_size=4, window_size=4, embed_dim=48,
                                           depths=(2, 2), num_heads=(3, 6)))
  digits(c, size=32)


def digits(c: ml_collections.ConfigDict, *, size: int = 0, rgb: bool = True, batch_size: int = 64,
           eval_batch_size: int = 120, num_threads: int = 2):
  """The CPU settings' data: scikit-learn's 8x8 digits (1,437 train / 360 held-out images, shipped with
  the package), as 3-channel images (`rgb`) resized to `size` (0: kept at 8x8), values in [-1, 1]."""
  ops = (["gray_to_rgb"] if rgb else []) + ([f"resize({size})"] if size else []) + ["value_range(-1, 1)"]
  c.input.update(data="digits", train_split="train", eval_split="test", batch_size=batch_size,
                 eval_batch_size=eval_batch_size, pp_train="|".join(ops), pp_eval="|".join(ops),
                 num_threads=num_threads)


COCO_TRAIN_IMAGES = 117_266  # train2017 images with annotations (torchvision's references drop the others)
# torchvision's `trainable_layers=3`: the ResNet's stem and stage 1 never move, nor (FrozenBatchNorm2d) any BN.
RESNET_FROZEN = r"backbone/body/(conv1|bn1|layer1|.*/bn\d|.*/downsample/layers_1)/.*"


def coco_detection(c: ml_collections.ConfigDict, *, base_lr: float, batch_size: int = 16,
                   iterations: int = 90_000, milestones=(60_000, 80_000), max_instances: int = 100):
  """The 1x COCO 2017 recipe of torchvision's detection references: images resized to a shorter side of
  800 (longer at most 1333) with flips, ImageNet statistics, SGD momentum 0.9 and weight decay 1e-4 on
  every parameter, `iterations` at `batch_size`, x0.1 at `milestones`, 500 linear warm-up iterations from
  0.001 x `base_lr`, the stem and stage 1 frozen. One square 1344 canvas holds both orientations (a
  landscape-only bucket would save compute; the padding costs it here)."""
  pp = "decode|det_resize(800, 1333)|{}normalize|det_pad(1344)|det_pack(" + str(max_instances) + ")"
  c.input.update(data="coco_json", train_split="train2017", eval_split="val2017", batch_size=batch_size,
                 eval_batch_size=8, pp_train=pp.format("det_flip|"), pp_eval=pp.format(""), num_threads=32)
  steps_per_epoch = COCO_TRAIN_IMAGES / batch_size
  c.total_steps = iterations
  c.optimizer.update(name="sgd", momentum=0.9, weight_decay=1e-4, wd_mask=r".*", freeze=RESNET_FROZEN)
  c.schedule.update(name="multistep", base_lr=base_lr, warmup_epochs=500 / steps_per_epoch, warmup_from=0.001,
                    milestones=tuple(m / steps_per_epoch for m in milestones), decay_rate=0.1)
  c.log_every = 100
  c.eval_every = 10_000
  c.checkpoint_every = 5_000


def shapes_detection(c: ml_collections.ConfigDict, *, size: int = 96, batch_size: int = 8,
                     max_instances: int = 8):
  """The detection CPU settings' data: generated scenes of shapes on the sample photos (4 classes, masks),
  `size` px, with flips; ImageNet statistics as the full settings."""
  pp = f"det_resize({size}, {size})|{{}}normalize|det_pad({size})|det_pack({max_instances})"
  c.input.update(data="shapes", train_split="train", eval_split="test", batch_size=batch_size,
                 eval_batch_size=20, pp_train=pp.format("det_flip|"), pp_eval=pp.format(""), num_threads=2)


ADE20K_TRAIN_IMAGES = 20_210  # ADEChallengeData2016/images/training


def ade20k_segmentation(c: ml_collections.ConfigDict, *, batch_size: int = 32, iterations: int = 80_000,
                        crop: int = 512):
  """mmseg's ADE20K recipe (DenseCLIP's baselines): images rescaled to fit 2048 x 512 at a random ratio in
  [0.5, 2], random `crop` crops (no class over 75% of one), flips, photometric distortion, ImageNet
  statistics, padded with the ignore label; held out: rescaled to fit 2048 x 512 and predicted by a
  sliding `crop` window at stride 341 (crop 2/3), scored at the original size."""
  train = (f"decode|seg_random_resize((2048, 512), 0.5, 2.0)|seg_random_crop({crop}, 0.75)|seg_flip|"
           f"seg_photometric|normalize|seg_pad({crop})|seg_pack")
  c.input.update(data="ade20k", train_split="train", eval_split="validation", batch_size=batch_size,
                 eval_batch_size=1, pp_train=train, num_threads=32,
                 pp_eval="decode|seg_resize_keep_ratio((2048, 512))|normalize|seg_pack")
  c.total_steps = iterations
  c.eval.update(mode="slide", crop=(crop, crop), stride=(crop * 2 // 3, crop * 2 // 3))
  c.log_every = 100
  c.eval_every = 8_000
  c.checkpoint_every = 4_000


def shapes_segmentation(c: ml_collections.ConfigDict, *, data: str = "shapes_seg", size: int = 96,
                        batch_size: int = 8):
  """The segmentation CPU settings' data: the generated scenes of shapes (or `shapes_texture`, whose
  classes differ by texture, not colour) with their semantic maps, `size` px, flips, ImageNet statistics."""
  pp = f"{{}}normalize|seg_pad({size})|seg_pack"
  c.input.update(data=data, train_split="train", eval_split="test", batch_size=batch_size, eval_batch_size=20,
                 pp_train=pp.format("seg_flip|"), pp_eval=pp.format(""), num_threads=2)
