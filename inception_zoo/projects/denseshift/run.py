"""denseshift's experiment driver (README.md; the recipes are experiments/denseshift.py)."""
import copy
import os
from typing import Dict

import ml_collections
import numpy as np

from inception_zoo import ckpt
from inception_zoo.data import datasets
from inception_zoo.quant import shift
from inception_zoo.train import classification, qat


SCHEMES = ("denseshift", "shift_zero", "shift_direct")


def train(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, object]:
  fp_dir = config.fp_from or os.path.join(workdir, "fp")
  result: Dict[str, object] = {}
  if not config.fp_from:
    result["fp/top1"] = classification.run(qat.fp_config(config), fp_dir)["eval/top1"]
  weights, _ = ckpt.load_weights(fp_dir)
  num_classes = config.num_classes or datasets.get_dataset(
      config.input.data, config.input.train_split, config.input.get("data_dir")).num_classes
  for scheme in SCHEMES:
    c = copy.deepcopy(config)
    c.quant.method = scheme
    model = qat.build_model(c, num_classes)
    start = model.shift_latents_from(weights["params"])
    init_dir = os.path.join(workdir, f"{scheme}_init")
    if not os.path.exists(os.path.join(init_dir, "variables")):
      ckpt.save_weights(init_dir, {"params": start, "batch_stats": weights["batch_stats"]},
                        {"source": f"{scheme} latents of {fp_dir}"})
    c.init_from = init_dir
    out = qat.run(c, os.path.join(workdir, scheme))
    trained, _ = ckpt.load_weights(os.path.join(workdir, scheme))
    before, after = model.shift_values(start), model.shift_values(trained["params"])
    values = np.concatenate([v.ravel() for v in after.values()])
    result[f"{scheme}/top1"] = out["eval/top1"]
    result[f"{scheme}/loss"] = out["eval/loss"]
    start_values = np.concatenate([v.ravel() for v in before.values()])
    result[f"{scheme}/frozen"] = shift.frozen_share(start_values, values)
    result[f"{scheme}/zeros"] = float(np.mean(values == 0))
    result[f"{scheme}/signed_pow2"] = bool(np.all(shift.is_signed_power_of_two(values)))
  print("denseshift: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
  return result
