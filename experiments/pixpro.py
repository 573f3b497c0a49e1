"""PixPro (Xie et al., "Propagate Yourself", CVPR 2021), paper 21: pixel-level vs instance-level
pre-training judged by a per-pixel linear probe (inception_zoo/projects/pixpro/, README.md there).

Textured shapes, where PixPro > BYOL reproduces (76 s of CPU; mIoU over seeds 0-7 PixPro 0.211, BYOL
0.193, random init 0.171, PixPro ahead in 7 of 8 seeds):
  python -m experiments.pixpro --config=textured --workdir=workdirs/pixpro_textured
The photographs' colour regions (46 s of CPU; seed 0: 0.290 / 0.288 / 0.270, PixPro > BYOL not
reproduced):
  python -m experiments.pixpro --config=runlocal --workdir=workdirs/pixpro
ImageNet-1K, ResNet-50 C5, 100 epochs of LARS at batch 1024 (the official 100-epoch script):
  python -m experiments.pixpro --workdir=WORKDIR --config.data_dir=TFDS_DIR
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.pixpro.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="pixpro_sample_images", data="sample_images", data_dir=None, seed=0, methods=("pixpro", "byol"),
      image_scale=4, view_size=24, area_min=20.0, area_max=100.0,
      # Per-view augmentation after the crop and flip (`views.byol_views`): colour jitter strengths
      # (brightness, contrast, saturation, hue) and the probabilities of each op in views 1 and 2.
      jitter=(0.4, 0.4, 0.4, 0.0), jitter_p=1.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0),
      # probe_area: the probe crops' range of area (%), () = the pre-training views' (area_min, area_max).
      label_blur=6.0, probe_area=(), clusters_per_image=4, probe_split=0.6, probe_crops=64, probe_steps=300,
      num_scenes=64, scene_size=48, probe_scenes=16, texture_period=(4.0, 8.0),  # `textured_shapes`
      probe_lr=0.05, backbone="small_cnn", feature="C2", width=32, hidden_dim=256, dim=64,
      batch_size=12, total_steps=120, log_every=40, optimizer="adam", learning_rate=2e-3,
      weight_decay=0.0, warmup_steps=0, momentum=0.99, gamma=2.0, transform_layers=1,
      pos_ratio=0.7, temperature=0.3, instance_weight=0.0, checkpoint_every=0, keep_checkpoints=1,
      num_threads=2, mesh=ml_collections.ConfigDict(dict(data=1, fsdp=1))))
  if arg == "runlocal":
    return c
  if arg == "textured":  # the second dense task: textured shapes on the photographs
    # Small pre-training views (8-30% of a scene) often show different shapes: the probe's crops keep
    # the 30-100% of the other settings.
    c.update(name="pixpro_textured_shapes", data="textured_shapes", scene_size=64, view_size=32,
             area_min=8.0, area_max=30.0, probe_area=(30.0, 100.0), texture_period=(6.0, 12.0),
             jitter=(0.4, 0.4, 0.4, 0.1), probe_crops=8, total_steps=300, log_every=100)
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, textured, or none = the ImageNet-1K ResNet-50 "
                    f"setting)")
  steps_per_epoch = 1_281_167 // 1024
  c.update(name="pixpro_r50_i1k", data="tfds:imagenet2012", backbone="resnet50", feature="C5",
           view_size=224, area_min=8.0, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale_p=0.2,
           blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2), hidden_dim=4096, dim=256, batch_size=1024,
           total_steps=100 * steps_per_epoch, log_every=100, optimizer="lars",
           learning_rate=1.0 * 1024 / 256, weight_decay=1e-5, warmup_steps=5 * steps_per_epoch,
           methods=("pixpro",), checkpoint_every=5_000, keep_checkpoints=3, num_threads=32)
  c.mesh.data = -1  # data-parallel over every device
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
