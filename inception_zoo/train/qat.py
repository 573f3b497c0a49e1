"""Quantisation-aware training of any registered classifier on the classification trainer's loop.

    python -m experiments.hawq --config=runlocal --workdir=workdirs/hawq_digits
    python -m experiments.denseshift --config=runlocal --workdir=workdirs/denseshift_digits

Quantisation is a reparametrisation of the parameter pytree, so no model is edited:
`QuantizedModel` wraps the classifier, maps the trained parameters to the quantised ones before
each `model.apply`, and (with `quant.act_bits`) fake-quantises the inputs of every nn.Conv and
nn.Dense through Flax's method interception. Methods (`config.quant.method`):

- `uniform`: HAWQ's symmetric per-channel weight quantiser with the straight-through estimator
  (Dong et al., ICCV 2019; `inception_zoo.quant.uniform`). Bits per layer: `quant.layer_bits`
  (pairs of parameter path and bits, e.g. from `projects.hawq.hawq.allocate_bits`), else `quant.bits`.
  HAWQ's multi-stage fine-tuning: `quant.order` lists the layers in their fine-tuning
  order, split into `quant.stages` groups; group g is quantised from step g x `quant.stage_steps`
  on, and the layers not yet quantised train in full precision meanwhile. Layers already
  quantised keep training through the STE.
- `denseshift` / `shift_zero`: DenseShift's zero-free shift weights and the zero-including S3
  baseline, trained through the sign-scale decomposition (Li et al., ICCV 2023;
  `inception_zoo.quant.shift`). Each selected kernel is the sign latent and gains a sibling
  `<name>_shift` leaf holding the latent binaries (low-variance init); `shift_latents_from` turns
  full-precision weights into such parameters, for `config.init_from`.
- `shift_direct`: DenseShift's zero-free levels trained directly, the baseline of the paper's
  weight-freezing argument: each selected kernel is a full-precision latent quantised to
  sign(w) * 2^round(log2(|w| / alpha)) with the straight-through estimator; no extra leaves
  (`experiments/denseshift.py`: 99.4% of its weights stay at their transferred level over 100
  steps, against 54% of `denseshift`'s).

Evaluation always sees the fully quantised model. Resume, sharding, the NaN stop, metrics,
checkpoints and pre-emption are the shared loop's (`classification.Task`).
"""
import contextlib
import copy
import dataclasses
import re
from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from inception_zoo.errors import UserError
from inception_zoo.quant import shift, uniform
from inception_zoo.train import classification

METHODS = ("uniform", "denseshift", "shift_zero", "shift_direct")
LATENT_METHODS = ("denseshift", "shift_zero")
LATENT_SUFFIX = "_shift"


def _flat(params) -> Dict[str, Any]:
  return traverse_util.flatten_dict(params, sep="/")


def _unflat(flat: Dict[str, Any]):
  return traverse_util.unflatten_dict(flat, sep="/")


@dataclasses.dataclass
class QuantizedModel:
  """A classifier whose selected kernels (and optionally conv/dense inputs) are quantised; `init`
  and `apply` take and return the trained parameters (the model's own, plus the shift latents)."""
  model: nn.Module
  quant: Dict[str, Any]

  def __post_init__(self):
    q = self.quant
    if q["method"] not in METHODS:
      raise UserError(f"unknown quant.method '{q['method']}' ({', '.join(METHODS)})")
    try:
      self._select = re.compile(q["select"])
      self._exclude = re.compile(q["exclude"]) if q["exclude"] else None
    except re.error as e:
      raise UserError(f"quant.select / quant.exclude is not a valid regex ({e})")
    self._bits = {path: int(b) for path, b in q["layer_bits"]}

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  @property
  def head_name(self) -> str:
    return getattr(self.model, "head_name", "head")

  @property
  def is_shift(self) -> bool:
    return self.quant["method"] != "uniform"

  @property
  def has_latents(self) -> bool:
    """Whether each quantised kernel gains a sign-scale decomposition's `<name>_shift` latents."""
    return self.quant["method"] in LATENT_METHODS

  @property
  def zero_free(self) -> bool:
    return self.quant["method"] != "shift_zero"

  def quantized_paths(self, params):
    """Paths of the model's kernels this run quantises."""
    return [p for p in _flat(params) if not p.endswith(LATENT_SUFFIX) and self._select.fullmatch(p)
            and not (self._exclude and self._exclude.fullmatch(p))]

  def bits_of(self, path: str) -> int:
    return self._bits.get(path, int(self.quant["bits"]))

  def init(self, rngs, x, *, train: bool = False):
    variables = dict(self.model.init(rngs, x, train=train))
    unknown = sorted(set(self._bits) - set(self.quantized_paths(variables["params"])))
    if unknown:
      raise UserError(f"quant.layer_bits names '{unknown[0]}', which is not a quantised kernel of the model")
    if self.has_latents:
      key = rngs["params"] if isinstance(rngs, dict) else rngs
      flat = _flat(variables["params"])
      for i, path in enumerate(self.quantized_paths(variables["params"])):
        flat[path + LATENT_SUFFIX] = shift.low_variance_init(
            jax.random.fold_in(key, i), flat[path].shape, self.bits_of(path), self.quant["latent_std"])
      variables["params"] = _unflat(flat)
    return variables

  def _stage_of(self, path: str) -> int:
    order = list(self.quant["order"])
    if path not in order:
      return 0
    groups = np.array_split(np.arange(len(order)), max(1, int(self.quant["stages"])))
    return next(g for g, members in enumerate(groups) if order.index(path) in members)

  def model_params(self, params, step: Optional[jax.Array] = None):
    """The parameters `self.model` runs with: quantised kernels, latents folded in. With `step`,
    layers whose fine-tuning stage has not begun stay in full precision."""
    flat = _flat(params)
    out = {p: v for p, v in flat.items() if not p.endswith(LATENT_SUFFIX)}
    for path in self.quantized_paths(params):
      w, bits = flat[path], self.bits_of(path)
      if self.has_latents:
        q = shift.effective_kernel(w, flat[path + LATENT_SUFFIX], bits, self.zero_free)
      elif self.is_shift:
        q = shift.direct_kernel(w, bits)
      else:
        q = uniform.quantize_weight(w, bits)
      start = self._stage_of(path) * int(self.quant["stage_steps"])
      if step is not None and start > 0:
        q = jnp.where(step >= start, q, w)
      out[path] = q.astype(w.dtype)
    return _unflat(out)

  def apply(self, variables, x, *, train: bool, step: Optional[jax.Array] = None, **kwargs):
    variables = {**variables, "params": self.model_params(variables["params"], step)}
    bits = self.quant["act_bits"]
    with uniform.quantized_inputs(bits) if bits else contextlib.nullcontext():
      return self.model.apply(variables, x, train=train, **kwargs)

  def shift_values(self, params) -> Dict[str, np.ndarray]:
    """{path: integer shift weights} (no scale) of a shift-quantised model: what inference stores."""
    if not self.is_shift:
      raise UserError("shift_values needs quant.method denseshift, shift_zero or shift_direct")
    flat = _flat(params)
    if not self.has_latents:
      return {p: np.asarray(shift.direct_weight(flat[p], self.bits_of(p)))
              for p in self.quantized_paths(params)}
    return {p: shift.quantized_values(flat[p], flat[p + LATENT_SUFFIX], self.zero_free)
            for p in self.quantized_paths(params)}

  def shift_latents_from(self, params) -> Dict[str, Any]:
    """Full-precision parameters -> this model's trained parameters: each selected kernel keeps its
    weights as the sign latent and gains latents encoding its nearest shift level (transfer);
    for `shift_direct` the full-precision kernels are the latents themselves."""
    flat = {p: np.asarray(v) for p, v in _flat(params).items()}
    encoded = self.quantized_paths(params) if self.has_latents else []
    for path in encoded:
      flat[path + LATENT_SUFFIX] = shift.encode(flat[path], self.bits_of(path), self.zero_free,
                                                self.quant["latent_std"])
    return _unflat(flat)


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> QuantizedModel:
  return QuantizedModel(classification.build_classifier(config, num_classes), config.quant.to_dict())


def make_train_step(model: QuantizedModel, tx, schedule, config: ml_collections.ConfigDict):
  """The classification step with the quantised forward pass at the state's step."""
  return classification.make_train_step(model, tx, schedule, config,
                                        apply_kwargs=lambda state: {"step": state.step})


def summary(config, result: Dict[str, float], num_images: int, step: int) -> str:
  bits = sorted({b for _, b in config.quant.layer_bits} or {config.quant.bits})
  return (f"{config.model_name} ({config.quant.method}, {'/'.join(map(str, bits))} bits): held-out "
          f"top-1 {result['eval/top1']:.4f} ({num_images} images, step {step})")


QAT = classification.Task(build_model, make_train_step, classification.make_eval_step, summary)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  return classification.train_and_evaluate(config, workdir, QAT)


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  return classification.run(config, workdir, QAT)


def base_config() -> ml_collections.ConfigDict:
  """The classification trainer's fields plus the quantisation; experiments set what differs."""
  c = classification.base_config()
  c.quant = ml_collections.ConfigDict(dict(
      method="uniform", select=r".*kernel", exclude="", bits=8, layer_bits=(), act_bits=0,
      order=(), stages=1, stage_steps=0, latent_std=1e-3))
  return c


def fp_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The full-precision run a quantised one starts from (HAWQ, DenseShift): the same model, data and
  optimizer, its own steps and rate."""
  c = classification.base_config()
  for key in c:
    if key in config:
      c[key] = copy.deepcopy(config[key])
  c.total_steps = config.fp_steps
  c.schedule.base_lr = config.fp_lr
  c.init_from = ""
  return c
