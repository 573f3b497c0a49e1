"""hawq's experiment driver (README.md; the recipes are experiments/hawq.py)."""
import copy
import os
from typing import Dict

import jax
import ml_collections
import numpy as np

from inception_zoo import ckpt
from inception_zoo.data import datasets, pipeline, pp
from inception_zoo.errors import UserError
from inception_zoo.projects.hawq import hawq, hessian
from inception_zoo.registry import create_model
from inception_zoo.train import classification, qat


def hessian_batches(config: ml_collections.ConfigDict):
  data = datasets.get_dataset(config.input.data, config.input.train_split, config.input.get("data_dir"))
  batches = pipeline.train_batches(data.source, pp.build(config.input.pp_eval),
                                   global_batch=config.hawq.hessian_batch_size, seed=config.seed,
                                   num_threads=config.input.num_threads)
  return [{k: np.asarray(b[k]) for k in ("image", "label")}
          for b, _ in zip(batches, range(config.hawq.hessian_batches))]


def train(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, object]:
  if config.hawq.rule not in ("pareto", "ranking"):
    raise UserError(f"unknown hawq.rule '{config.hawq.rule}' (pareto, ranking)")
  fp_dir = config.fp_from or os.path.join(workdir, "fp")
  result: Dict[str, object] = {}
  if not config.fp_from:
    result["fp/top1"] = classification.run(qat.fp_config(config), fp_dir)["eval/top1"]
  weights, _ = ckpt.load_weights(fp_dir)
  params, batch_stats = weights["params"], weights["batch_stats"]
  model = create_model(config.model_name, num_classes=config.num_classes or datasets.get_dataset(
      config.input.data, config.input.train_split, config.input.get("data_dir")).num_classes,
                       **config.model.to_dict())
  paths = qat.build_model(config, model.num_classes).quantized_paths(params)
  block_map = {p: [p] for p in paths}
  eigs = hessian.top_eigenvalues(hessian.model_loss(model, batch_stats), params, hessian_batches(config),
                                 block_map, jax.random.key(config.seed), max_iters=config.hawq.max_iters,
                                 tol=config.hawq.tol)
  sizes = hawq.leaf_sizes(params, paths)
  sens = hawq.sensitivities(eigs, sizes)
  budget = int(config.hawq.budget_bits * sum(sizes.values()))
  uniform = int(round(config.hawq.budget_bits))
  candidates = config.hawq.candidates
  allocations = {
      "hawq": (hawq.pareto_bits(eigs, params, sizes, candidates, budget) if config.hawq.rule == "pareto"
               else hawq.allocate_bits(sens, sizes, candidates, budget)),
      "reversed": hawq.allocate_bits({k: -v for k, v in sens.items()}, sizes, candidates, budget),
  }
  if uniform == config.hawq.budget_bits:
    allocations["uniform"] = hawq.uniform_bits(sizes, uniform)
  result.update(eigenvalues=eigs, sensitivities=sens, budget_bits=budget)
  for name, bits in allocations.items():
    c = copy.deepcopy(config)
    order = hawq.finetune_order(hawq.perturbations(eigs, params, bits))
    c.quant.update(layer_bits=tuple(bits.items()), order=tuple(order), stages=config.hawq.stages)
    c.init_from = fp_dir
    out = qat.run(c, os.path.join(workdir, name))
    result[f"{name}/top1"] = out["eval/top1"]
    result[f"{name}/loss"] = out["eval/loss"]
    result[f"{name}/size_bits"] = hawq.model_bits(bits, sizes)
    result[f"{name}/bits"] = bits
  print("hawq: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k.endswith(("top1", "loss"))))
  return result
