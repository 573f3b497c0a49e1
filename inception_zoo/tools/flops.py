"""Multiply-accumulates (MACs) of a registered model's evaluation forward pass, for one image.

    python -m inception_zoo.tools.flops --model inception_next_tiny --size 224

Nothing is materialised: parameters and input are abstract (`jax.eval_shape`), so any model size
costs only a trace and one XLA compilation. Two counts, because they answer different questions:

- `gmacs`, the convention of the papers' tables (fvcore, timm's model lists, PyTorch's
  FlopCounterMode, which this equals exactly): every kernel tap of every convolution output, zero
  padding included, plus every matrix product (dense layers, attention); normalisation, activations,
  pooling and sums are not counted. Read from the jaxpr: out elements x kernel taps x input channels
  per group for `conv_general_dilated` (depthwise and grouped convolutions included), out elements x
  contracted size for `dot_general`.
- `xla_gmacs`: half the 'flops' of XLA's cost analysis of the compiled function (what the backend
  will run). It differs from the papers in two ways: a convolution is charged only for the taps that
  land inside the input (a 'SAME' 3x3 convolution on 8x8 costs (22/24)^2 of the papers' count), and
  every elementwise operation (BatchNorm, GELU, layer scale, residual sums) adds one flop per element.
  Inception-v4 at 299 px, full of 1x7/7x1 padded convolutions on 17x17 maps, comes out 4% below its
  paper count; InceptionNeXt-T, whose wide MLPs carry many elementwise operations, 7% above.
"""
import argparse
import math
import sys
from typing import Callable, Dict

import jax
import jax.extend.core as jex
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.registry import create_model


def _eqn_macs(eqn) -> int:
  if eqn.primitive.name == "conv_general_dilated":
    rhs = eqn.invars[1].aval.shape
    _, in_dim, *spatial = eqn.params["dimension_numbers"].rhs_spec
    taps = rhs[in_dim] * math.prod(rhs[d] for d in spatial)  # input channels per group x window
    return math.prod(eqn.outvars[0].aval.shape) * taps
  if eqn.primitive.name == "dot_general":
    (contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contracting)
  return 0


def jaxpr_macs(jaxpr: jex.Jaxpr) -> int:
  """Convolution and matrix-product MACs of a jaxpr, nested calls included; a `scan` body counts once
  per iteration."""
  total = 0
  for eqn in jaxpr.eqns:
    inner = sum(jaxpr_macs(sub) for sub in jex.jaxprs_in_params(eqn.params))
    if eqn.primitive.name == "scan":
      inner *= eqn.params["length"]
    total += _eqn_macs(eqn) + inner
  return total


def xla_flops(fn: Callable, *args) -> float:
  """'flops' of XLA's cost analysis of `jax.jit(fn)` compiled for `args` (arrays or ShapeDtypeStructs)."""
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  # A dict in current jax; older releases returned a list with one dict per device program.
  return float((analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"])


def model_macs(name: str, size: int, num_classes: int = 1000, **options) -> Dict[str, float]:
  """{'gmacs': papers' convention, 'xla_gmacs': XLA's flops / 2} of `name`'s evaluation forward pass
  on one size x size RGB image."""
  model = create_model(name, num_classes=num_classes, **options)
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), image)

  def forward(variables, image):
    return model.apply(variables, image, train=False)[0]

  macs = jaxpr_macs(jax.make_jaxpr(forward)(variables, image).jaxpr)
  return {"gmacs": macs / 1e9, "xla_gmacs": xla_flops(forward, variables, image) / 2e9}


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m inception_zoo.tools.flops",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--model", required=True, help="registered model name, e.g. inception_v4")
  parser.add_argument("--size", type=int, required=True, help="input height and width in pixels")
  parser.add_argument("--num_classes", type=int, default=1000)
  args = parser.parse_args(argv)
  try:
    counts = model_macs(args.model, args.size, args.num_classes)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2)
  print(f"{args.model} at {args.size}x{args.size}: {counts['gmacs']:.3f} GMACs (convolutions and "
        f"matrix products, the papers' convention); XLA cost analysis {counts['xla_gmacs']:.3f} GMACs")
  return counts


if __name__ == "__main__":
  main()
