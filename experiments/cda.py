"""CDA (Yin and Shen, "Dataset Distillation via Curriculum Data Synthesis in Large Data Era", TMLR 2024,
arXiv:2311.18838), paper 25 of the zoo, on SRe2L's squeeze / recover / relabel pipeline (Yin, Xing and
Shen, NeurIPS 2023): the digits setting, and the full ImageNet-1K pipeline (projects/cda/sre2l.py).
(inception_zoo/projects/cda/, README.md there: what is measured, and how).

CPU setting (about 2 min): digits, IPC 10, 3 seeds: CDA 0.955 > SRe2L 0.936 > random real 0.856 held-out
top-1, seed by seed; the same real images relabelled by the teacher reach 0.973:
  python -m experiments.cda --config=runlocal --workdir=workdirs/cda
Full setting: ImageNet-1K IPC 50 from a converted torchvision ResNet-18 teacher:
  python -m inception_zoo.convert --timm resnet18 --checkpoint resnet18_tv_in1k.safetensors --out W
  python -m experiments.cda --config.init_from=W --workdir=workdirs/cda_i1k
"""
import ml_collections

from inception_zoo.data import pp
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.cda.run import run


def student_config() -> ml_collections.ConfigDict:
  """The full setting's student (`SRe2L/validate/train_FKD.sh`): ResNet-18 from scratch, AdamW 1e-3
  (weight decay 0.01 on kernels), cosine, batch 1024, 300 epochs on RandomResizedCrop(0.08, 1) + flip
  views with CutMix (Beta(1, 1), every batch), evaluated on the 224 px centre of 256 px ImageNet val."""
  return ml_collections.ConfigDict(dict(
      model_name="resnet18", num_epochs=300.0, log_every=100, eval_every=10_000, checkpoint_every=1_000,
      input=dict(eval_split="validation", batch_size=1024, eval_batch_size=1000, num_threads=32,
                 pp_train="decode|inception_crop(224, area_min=8)|flip_lr|normalize",
                 pp_eval="decode|resize_small(256)|central_crop(224)|normalize|keep('image', 'label')"),
      optimizer=dict(name="adamw", weight_decay=0.01),
      schedule=dict(name="cosine", base_lr=1e-3),
      mixup=dict(cutmix_alpha=1.0, prob=1.0, switch_prob=0.0)))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="cda_digits", data="digits", data_dir=None, image_size=16, num_classes=10, ipc=10, seeds=3,
      seed=0, widths=(8, 16), teacher="bn_convnet", teacher_model=ml_collections.ConfigDict(),
      init_from="", pixel_mean=pp.IMAGENET_MEAN, pixel_std=pp.IMAGENET_STD,
      teacher_steps=200, teacher_batch_size=128, teacher_lr=3e-3,
      recover_steps=100, recover_batch_size=100, recover_lr=0.25, r_bn=0.01, first_bn_multiplier=10.0,
      jitter=2, curriculum="cosine", milestone=1.0, min_crop_scale=0.08,
      student_steps=200, student_lr=1e-2, student_weight_decay=0.01, temperature=3.0, log_every=100,
      student=student_config()))
  if arg == "runlocal":
    return c
  if arg == "i21k":  # ImageNet-21K-P (winter 21) in its ImageFolder layout under --config.data_dir
    c.update(name="cda_i21k_ipc20", data="folder", image_size=224, num_classes=10450, ipc=20,
             seeds=1, teacher="resnet18", recover_steps=2000, recover_lr=0.05, r_bn=0.25, jitter=32,
             temperature=20.0)
    c.student.input.eval_split = "imagenet21k_val"
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, i21k, or none = ImageNet-1K IPC 50)")
  c.update(name="cda_i1k_ipc50", data="tfds:imagenet2012", image_size=224, num_classes=1000, ipc=50,
           seeds=1, teacher="resnet18", recover_steps=4000, jitter=32, temperature=20.0)
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
