"""Fast Sparse ConvNets (Elsen, Dukhan, Gale, Simonyan, CVPR 2020), paper 17 of the zoo: MobileNet v1
with its 1x1 convolutions and classifier pruned by gradual magnitude pruning (Zhu & Gupta 2018, Eq. 1),
then run with the sparse 1x1 path (inception_zoo/sparsity/spmm.py).

CPU, embedded digits (about 80 s of CPU time on 2 cores): trains MobileNet v1 (width 0.25, one block per
stage) dense and pruned to 80% with the cubic schedule from the same seed, then evaluates the pruned network
through the sparse path and compares it with the dense masked network:
  python -m experiments.sparse_mobilenet --config=runlocal --workdir=workdirs/sparse_mobilenet_digits
Returns the held-out top-1 of both runs, the final sparsity of every pruned layer, the sparse path's
top-1 and its largest logit difference from the dense masked model. Measured here: dense 0.969, 80%
sparse 0.967 held-out top-1 (90%, pruned until step 200: 0.894 at this tiny width), the same top-1
through the sparse path, logits within 4.3e-6 of the dense masked model's (scale 18).
Speed: benchmarks/sparse_conv.py.

ImageNet-1k, the paper's MobileNet v1 at 90% sparsity (prepare `tfds build imagenet2012
--manual_dir=...` first):
  python -m experiments.sparse_mobilenet --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
Full setting (verify against the paper's Sec. 5 and its appendix, which follow the MobileNet training
of Zhu & Gupta's model_pruning library): mobilenetv1_100, first full convolution and all depthwise
convolutions dense, every 1x1 convolution and the classifier pruned from 0 to 90% with the cubic
schedule; RMSProp (decay 0.9, momentum 0.9, eps 1.0), lr 0.045 x 0.94 every 2 epochs (the
TF-slim MobileNet recipe), batch 1024, label smoothing 0.1, 224 px inception crops, 100 epochs,
pruning between epochs 5 and 50 every 1,000 steps (Zhu & Gupta prune every 100-1,000 steps over
the first half of training).

CPU setting (`--config=runlocal`): scikit-learn's 8x8 digits upsampled to 32x32 (1,437 train / 360
held-out); mobilenetv1_100 at width 0.25 and depth 0.34 (one depthwise-separable block per stage);
SGD with momentum 0.9, lr 0.1 with cosine decay, 300 steps of batch 32 (7 epochs; XLA's CPU
depthwise convolutions are slow to differentiate, so the network and batch are small); pruning from step
30 to 150 every 10 steps to 80% (this 1/4-width network has 8-128 channels per layer; 90% costs it
7 points here), then 150 steps of sparse fine-tuning.
"""
import os
from typing import Dict

import jax
import ml_collections
import numpy as np

from experiments.common import digits, imagenet
from inception_zoo import ckpt
from inception_zoo.data import datasets, pipeline, pp
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.pytree import path_str
from inception_zoo.sparsity import masks, spmm, training as sparse_training
from inception_zoo.train import classification

# Elsen et al.: the 1x1 convolutions (MobileNet v1's conv_pw; v2 / EfficientNet's conv_pw, conv_pwl and
# conv_head) and the classifier are pruned; the stem, depthwise and squeeze-excitation convs stay dense.
PRUNED = r".*(conv_pw|conv_pwl|conv_head|classifier)/kernel"


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


def sparse_check(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """The run's final weights on the held-out set: dense masked model vs the sparse 1x1 path."""
  state = ckpt.restore_numpy(os.path.join(os.path.abspath(workdir), "checkpoints",
                                          str(config.total_steps), "state"))
  data = datasets.get_dataset(config.input.data, config.input.eval_split, config.input.get("data_dir"))
  model = classification.build_classifier(config, data.num_classes)
  variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
  sparse = spmm.to_sparse(variables["params"], min_sparsity=0.5)
  dense_fn = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  sparse_fn = jax.jit(lambda v, x: spmm.sparse_apply(model, v, x, sparse, config.sparse_impl)[0])
  correct = {"dense": 0.0, "sparse": 0.0}
  err, scale, count = 0.0, 0.0, 0.0
  for batch in pipeline.eval_batches(data.source, pp.build(config.input.pp_eval),
                                     global_batch=config.input.eval_batch_size, num_threads=1):
    a, b = np.asarray(dense_fn(variables, batch["image"])), np.asarray(sparse_fn(variables, batch["image"]))
    err, scale = max(err, float(np.abs(a - b).max())), max(scale, float(np.abs(a).max()))
    for kind, logits in (("dense", a), ("sparse", b)):
      correct[kind] += float(np.sum((logits.argmax(-1) == batch["label"]) * batch["mask"]))
    count += float(np.sum(batch["mask"]))
  weights = {path_str(p): w for p, w in jax.tree_util.tree_flatten_with_path(variables["params"])[0]}
  density = {k: np.count_nonzero(weights[k]) / weights[k].size
             for k in masks.prunable_paths(variables["params"], config.sparsity.include)}
  density["global"] = (sum(np.count_nonzero(weights[k]) for k in density)
                       / sum(weights[k].size for k in density))
  return {"sparse_path/top1": correct["sparse"] / count, "masked_dense/top1": correct["dense"] / count,
          "sparse_path/max_logit_error": err, "sparse_path/logit_scale": scale,
          "sparse_path/layers": float(len(sparse)), "pruned/global_density": density["global"],
          **{f"density/{k}": v for k, v in density.items() if k != "global"}}


# The classifier trained with config.sparsity's masks (a dense config trains it plainly).
TASK = sparse_training.sparse_task(classification.CLASSIFICATION)


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  if config.mode != "train":
    return classification.run(config, workdir, TASK)
  result = {f"sparse/{k}": v for k, v in
            classification.train_and_evaluate(config, os.path.join(workdir, "sparse"), TASK).items()}
  if config.check_sparse_path:
    result.update(sparse_check(config, os.path.join(workdir, "sparse")))
  if config.compare_dense:
    dense = ml_collections.ConfigDict(config.to_dict())
    dense.sparsity.method = ""
    result.update({f"dense/{k}": v for k, v in
                   classification.train_and_evaluate(dense, os.path.join(workdir, "dense"), TASK).items()})
  return result


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
