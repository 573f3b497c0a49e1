"""timm (PyTorch) weights -> Flax variables, without importing torch.

    python -m inception_zoo.convert --timm inception_v4 --checkpoint model.safetensors --out DIR

writes a params-only Orbax checkpoint that `--config.init_from=DIR` loads (the classifier is reset
when the number of classes differs). From Python, `timm_to_flax(state_dict, variables)` takes a dict of
numpy arrays (e.g. `{k: v.numpy() for k, v in timm_model.state_dict().items()}`).

Flax module paths mirror timm's module names (list members are `layers_<i>`), so the key of every
leaf follows from a rule: `features/layers_6/branch1/layers_0/conv/kernel` <-> timm
`features.6.branch1.0.conv.weight`. Convolution kernels go from OIHW to HWIO, linear weights are
transposed, BatchNorm and LayerNorm weight/bias/running_mean/running_var become scale/bias/mean/var,
layer-scale `gamma` vectors and Swin V2's `q_bias`/`v_bias`/`logit_scale` keep their names. Conversion
is strict: every timm tensor must be used and every Flax leaf filled, with matching shapes.
"""
import argparse
import re
import sys
from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo import ckpt
from inception_zoo.errors import UserError
from inception_zoo.registry import create_model
from inception_zoo.pytree import path_str

_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
         ("params", "gamma"): "gamma",  # layer scale (InceptionNeXt), a plain parameter in timm
         # Swin V2 attention: q/v biases and the per-head logit scale, plain parameters in timm
         ("params", "q_bias"): "q_bias", ("params", "v_bias"): "v_bias",
         ("params", "logit_scale"): "logit_scale",
         # Swin V1 attention (DRCT): the relative-position bias table, stored per head in Flax
         ("params", "relative_position_bias_table"): "relative_position_bias_table",
         ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
# Counters, and the buffers Swin V2 derives from its window and input size (relative coordinates,
# their index, the shift mask): the Flax model computes them at trace time, and checkpoints saved
# when they were persistent still carry them.
_IGNORED = re.compile(
    r".*(num_batches_tracked|relative_coords_table|relative_position_index|attn_mask)$")


def timm_key(collection: str, path: str) -> str:
  """timm state-dict key of the Flax leaf `collection/path`."""
  *modules, leaf = path.split("/")
  modules = [m[len("layers_"):] if re.fullmatch(r"layers_\d+", m) else m for m in modules]
  try:
    return ".".join(modules + [_LEAF[(collection, leaf)]])
  except KeyError:
    raise UserError(f"no timm counterpart for Flax leaf {collection}/{path}")


def torch_to_flax_array(key: str, value: np.ndarray, target_shape: Tuple[int, ...]) -> np.ndarray:
  value = np.asarray(value)
  if value.ndim == 4:  # conv OIHW -> HWIO
    value = value.transpose(2, 3, 1, 0)
  elif value.ndim == 2:  # linear (out, in) -> (in, out)
    value = value.T
  if value.shape != tuple(target_shape):
    raise UserError(f"timm '{key}' has shape {value.shape} after layout change; "
                    f"the Flax model needs {tuple(target_shape)}")
  return value


def timm_to_flax(state_dict: Mapping[str, Any], variables: Dict[str, Any]) -> Dict[str, Any]:
  """Fills `variables` (arrays or ShapeDtypeStructs, e.g. from `jax.eval_shape(model.init, ...)`)
  from a timm state dict of numpy arrays. Returns numpy variables of the same structure."""
  state_dict = {k: v for k, v in state_dict.items() if not _IGNORED.match(k)}
  used = set()

  def fill(collection):
    def one(path, leaf):
      key = timm_key(collection, path_str(path))
      if key not in state_dict:
        raise UserError(f"the timm checkpoint has no '{key}' (is it the same architecture?)")
      used.add(key)
      return torch_to_flax_array(key, state_dict[key], leaf.shape).astype(leaf.dtype)
    return one

  out = {c: jax.tree_util.tree_map_with_path(fill(c), tree) for c, tree in variables.items()}
  unused = sorted(set(state_dict) - used)
  if unused:
    raise UserError(f"{len(unused)} timm tensors have no Flax counterpart, e.g. '{unused[0]}'")
  return out


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  try:
    return load_file(path)
  except FileNotFoundError:
    raise UserError(f"checkpoint {path} does not exist")
  except Exception as e:  # safetensors raises its own error type for damaged files
    raise UserError(f"cannot read {path} as safetensors: {str(e).splitlines()[0]}")


def head_classes(state_dict: Mapping[str, Any], model) -> int:
  # A model whose head is more than one layer names its last Linear in `timm_classifier`.
  key = f"{getattr(model, 'timm_classifier', model.head_name)}.weight"
  if key not in state_dict:
    raise UserError(f"the timm checkpoint has no classifier '{key}'")
  return int(np.shape(state_dict[key])[0])


def convert_timm(model_name: str, state_dict: Mapping[str, Any], image_size: int = 299,
                 **model_kwargs) -> Tuple[Any, Dict[str, Any]]:
  """(model, variables) for a registered model holding the weights of a timm state dict, traced at
  `image_size` px, or at the model's own `img_size` when it is built for one input size (Swin V2)."""
  model = create_model(model_name, **model_kwargs)
  model = model.clone(num_classes=head_classes(state_dict, model))
  image_size = getattr(model, "img_size", image_size)
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, image_size, image_size, 3)))
  return model, timm_to_flax(state_dict, dict(abstract))


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m inception_zoo.convert", description=__doc__.split("\n")[0])
  parser.add_argument("--timm", required=True, help="timm model name, e.g. inception_v4")
  parser.add_argument("--checkpoint", required=True, help="timm weights as .safetensors")
  parser.add_argument("--out", required=True, help="directory for the Orbax checkpoint")
  parser.add_argument("--model", default=None, help="inception_zoo model name (default: --timm)")
  args = parser.parse_args(argv)
  try:
    state_dict = read_safetensors(args.checkpoint)
    model_name = args.model or args.timm
    model, variables = convert_timm(model_name, state_dict)
    ckpt.save_weights(args.out, variables, {"model": model_name, "num_classes": model.num_classes,
                                            "source": f"timm:{args.timm}", "file": args.checkpoint})
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2)
  n = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  print(f"wrote {model_name} ({n:,} parameters, {model.num_classes} classes) to {args.out}")


if __name__ == "__main__":
  main()
