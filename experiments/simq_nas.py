"""SimQ-NAS (Sridhar, Szankin, Chen, Sundaresan, Sarah, "SimQ-NAS: Simultaneous Quantization Policy and
Neural Architecture Search", arXiv:2312.13301, 2023), paper 31 of the zoo.
(inception_zoo/projects/simq_nas/, README.md there: what is measured, and how).

CPU setting (about 40 s): a digits elastic supernet, architecture and per-layer bits searched jointly:
hypervolume 1.20 vs 1.06 for "search, then INT8 everywhere"; up to 8.4x smaller and 3.9x faster:
  python -m experiments.simq_nas --config=runlocal --workdir=workdirs/simq_nas
Full setting: the elastic ResNet-50 supernet on ImageNet from timm resnet50 weights:
  python -m experiments.simq_nas --config.init_from=weights/r50 --config.input.data_dir=DIR --workdir=W
"""
import ml_collections

from experiments import common
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.simq_nas import supernet_task as supernet_training
from inception_zoo.projects.simq_nas.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.predictor = "gbm"
  # eval_batch 0: the 360 held-out images at once
  c.search = ml_collections.ConfigDict(dict(samples=200, rounds=3, population=100, generations=30, chunk=16,
                                            eval_batch=0))
  if arg == "runlocal":
    c.name = "simq_nas_digits"
    c.supernet = ml_collections.ConfigDict(dict(kind="elastic_mlp", widths=(32, 48, 64), expansions=(1, 2, 3),
                                                stages=2, max_depth=2))
    c.bits = (4, 8, 32)
    c.total_steps = 400
    c.batch_size = 64
    c.learning_rate = 3e-3
    c.num_random = 2  # sandwich rule: largest + smallest + 2 random subnets per step
    c.log_every = 100
    c.calibration = 256  # training images that calibrate the activation ranges
    c.latency = ml_collections.ConfigDict(dict(batch=1024, samples=6, repeats=15, end_to_end=2))
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none for the elastic ResNet-50 ImageNet search)")
  c = supernet_training.base_config()
  c.update(name="simq_nas_resnet50_i1k", seed=0, predictor="gbm")
  c.supernet = ml_collections.ConfigDict(dict(kind="elastic_resnet", stem_width=64,
                                              stage_widths=(256, 512, 1024, 2048), base_depths=(1, 2, 4, 1),
                                              depth_list=(0, 1, 2), expand_ratio_list=(0.15, 0.2, 0.25),
                                              width_mult_list=(0.65, 0.8, 1.0)))
  common.imagenet(c, size=224, eval_resize=256, batch_size=256, num_epochs=25, norm="normalize")
  for split in ("pp_train", "pp_eval"):  # tfds ImageNet examples also carry their file name (a string)
    c.input[split] += "|keep('image', 'label')"
  c.optimizer.update(name="sgd", momentum=0.9, weight_decay=3e-5)
  c.schedule.update(name="cosine", base_lr=0.02)
  c.bits = (8, 32)  # the paper's per-layer INT8 / full-precision choice
  c.calibration = 512  # training images per subnet: BN statistics and activation ranges
  c.search = ml_collections.ConfigDict(dict(samples=200, rounds=5, population=50, generations=50,
                                            eval_images=10_000, chunk=1, eval_batch=250))
  c.latency = ml_collections.ConfigDict(dict(batch=8, samples=6, repeats=10, end_to_end=0))
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
