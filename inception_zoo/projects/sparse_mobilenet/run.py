"""sparse_mobilenet's experiment driver (README.md; the recipes are experiments/sparse_mobilenet.py)."""
import os
from typing import Dict

import jax
import ml_collections
import numpy as np

from inception_zoo import ckpt
from inception_zoo.data import datasets, pipeline, pp
from inception_zoo.pytree import path_str
from inception_zoo.sparsity import masks, spmm, training as sparse_training
from inception_zoo.train import classification


# Elsen et al.: the 1x1 convolutions (MobileNet v1's conv_pw; v2 / EfficientNet's conv_pw, conv_pwl and
# conv_head) and the classifier are pruned; the stem, depthwise and squeeze-excitation convs stay dense.
PRUNED = r".*(conv_pw|conv_pwl|conv_head|classifier)/kernel"


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
