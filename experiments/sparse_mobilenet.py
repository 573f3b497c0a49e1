"""Fast Sparse ConvNets (Elsen, Dukhan, Gale, Simonyan, CVPR 2020), paper 17 of the zoo: MobileNet v1
with its 1x1 convolutions and classifier pruned by gradual magnitude pruning (Zhu & Gupta 2018, Eq. 1),
then run with the sparse 1x1 path (inception_zoo/sparsity/spmm.py; inception_zoo/projects/sparse_mobilenet/,
README.md there: what is measured, and how).

CPU setting (about 1.5 min): MobileNet v1 (x0.25) pruned to 80% on the cubic schedule, 0.967 vs 0.969
dense held-out top-1; the sparse 1x1 path gives the same top-1, logits within 4.3e-6:
  python -m experiments.sparse_mobilenet --config=runlocal --workdir=workdirs/sparse_mobilenet_digits
Full setting: mobilenetv1_100 on ImageNet, pruned 0 -> 90% between epochs 5 and 50:
  python -m experiments.sparse_mobilenet --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
"""
import ml_collections

from experiments.common import digits, imagenet
from inception_zoo.data import pipeline
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.sparse_mobilenet.run import PRUNED, TASK, run  # noqa: F401  (TASK: the sharding plan's)
from inception_zoo.train import classification


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = classification.base_config()
  c.model_name = "mobilenetv1_100"
  c.sparsity = ml_collections.ConfigDict(dict(
      method="magnitude", sparsity=0.9, initial_sparsity=0.0, begin_step=0, end_step=0, frequency=1,
      include=PRUNED, exclude=""))
  c.compare_dense = False  # also train the dense network from the same seed
  c.check_sparse_path = False  # score the held-out set through the sparse path too
  c.sparse_impl = "scipy"  # its implementation (inception_zoo/sparsity/spmm.py)
  if arg == "runlocal":
    c.name = "sparse_mobilenet_digits"
    c.model = ml_collections.ConfigDict(dict(width=0.25, depth=0.34))
    digits(c, size=32, batch_size=32, eval_batch_size=360, num_threads=1)
    c.total_steps = 300
    c.sparsity.update(sparsity=0.8, begin_step=30, end_step=150, frequency=10)
    c.optimizer.update(name="sgd", momentum=0.9, weight_decay=5e-5)
    c.schedule.update(name="cosine", base_lr=0.1)
    c.compare_dense = c.check_sparse_path = True
    c.log_every = 100
    c.checkpoint_every = 10_000
    c.keep_checkpoints = 1
    c.mesh.data = 1
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none for ImageNet)")
  c.name = "sparse_mobilenetv1_90"
  c.optimizer = ml_collections.ConfigDict(dict(
      name="rmsprop", momentum=0.9, nesterov=False, decay=0.9, eps=1.0, b1=0.9, b2=0.999,
      weight_decay=4e-5, wd_mask=r".*kernel", grad_clip=0.0))
  c.schedule = ml_collections.ConfigDict(dict(
      name="exponential", base_lr=0.045, decay_rate=0.94, decay_epochs=2.0, warmup_epochs=0.0,
      end_lr_fraction=0.0))
  c.label_smoothing = 0.1
  imagenet(c, size=224, eval_resize=256, batch_size=1024, num_epochs=100.0)
  steps_per_epoch = pipeline.steps_per_epoch(1_281_167, 1024)
  c.sparsity.update(begin_step=5 * steps_per_epoch, end_step=50 * steps_per_epoch, frequency=1000)
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
