"""One metrics writer: `metrics.jsonl` + `config.json` in the workdir, TensorBoard events beside them.

Only process 0 writes. TensorBoard files come from tensorboardX, so TensorFlow is not needed.
"""
import json
import math
import os
import time
from typing import Any, Dict, List

import jax
import numpy as np

from inception_zoo.errors import UserError


class NonFiniteLoss(UserError):
  """Training produced a NaN/inf loss or gradient; the message names the step."""


class MetricWriter:

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write_config(self, config):
    if self.enabled:
      with open(os.path.join(self.workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  def write(self, step: int, metrics: Dict[str, Any]):
    if not self.enabled:
      return
    scalars = {k: float(np.asarray(v)) for k, v in metrics.items()}
    with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, int(step))
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> List[Dict[str, Any]]:
  """The rows of `metrics.jsonl` (for notebooks, plots and tests)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def check_finite(step: int, loss: float, grad_norm: float = 0.0):
  """Stops a run at its first non-finite loss, or gradient: on CPU a ReLU can turn NaN activations into
  zeros, so NaN inputs may leave the loss finite and poison only the gradients."""
  if not math.isfinite(grad_norm) and math.isfinite(loss):
    what = f"gradient norm became {grad_norm} (loss {loss:.4g})"
  elif not math.isfinite(loss):
    what = f"loss became {loss}"
  else:
    return
  raise NonFiniteLoss(f"{what} at step {step}; the update was not applied and the last "
                      f"checkpoint is intact (resume with a lower learning rate, e.g. "
                      f"--config.schedule.base_lr=...)")
