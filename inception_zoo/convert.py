"""timm and torchvision (PyTorch) weights -> Flax variables, without importing torch.

    python -m inception_zoo.convert --timm inception_v4 --checkpoint model.safetensors --out DIR
    python -m inception_zoo.convert --torchvision maskrcnn_resnet50_fpn --checkpoint model.safetensors --out DIR

writes a params-only Orbax checkpoint that `--config.init_from=DIR` loads (the classifier is reset
when the number of classes differs). From Python, `timm_to_flax(state_dict, variables)` takes a dict of
numpy arrays (e.g. `{k: v.numpy() for k, v in timm_model.state_dict().items()}`).

Flax module paths mirror timm's module names (list members are `layers_<i>`), so the key of every
leaf follows from a rule: `features/layers_6/branch1/layers_0/conv/kernel` <-> timm
`features.6.branch1.0.conv.weight`. Convolution kernels go from OIHW to HWIO, linear weights are
transposed, BatchNorm and LayerNorm weight/bias/running_mean/running_var become scale/bias/mean/var,
layer-scale `gamma` vectors and Swin V2's `q_bias`/`v_bias`/`logit_scale` keep their names. Conversion
is strict: every timm tensor must be used and every Flax leaf filled, with matching shapes.

torchvision's detectors (`TORCHVISION_MODELS`, `torchvision_detection_to_flax`) mirror torchvision's module
names the same way (`roi_heads.mask_head.0.0.weight` <-> `roi_heads/mask_head/layers_0/layers_0/kernel`), so
the same rule applies: FrozenBatchNorm2d's weight/bias/running_mean/running_var are BatchNorm's, and the mask
predictor's ConvTranspose2d weight (in, out, kh, kw) takes the convolution transpose to the (kh, kw, out, in)
kernel of a Flax `ConvTranspose(transpose_kernel=True)`. A model whose names differ brings its own key function.
torchvision's segmentation models (`deeplabv3_resnet50`) follow the same rule (`torchvision_detection_to_flax(...,
bn_eps=1e-5)`: their BatchNorm is a plain one), and mmsegmentation's Semantic FPN takes `mmseg_key`.
torchvision's published R-CNN / RetinaNet weights (COCO_V1) run FrozenBatchNorm2d at eps 0 (`overwrite_eps`);
the body's BatchNorm here adds 1e-5, so the variances are shifted by the difference, which is exact.
"""
import argparse
import re
import sys
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo import ckpt
from inception_zoo.errors import UserError, did_you_mean
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


def state_dict_to_flax(state_dict: Mapping[str, Any], variables: Dict[str, Any], key: Callable[[str, str], str],
                       source: str, adjust: Optional[Callable[[str, np.ndarray], np.ndarray]] = None) -> Dict[str, Any]:
  """Fills `variables` (arrays or ShapeDtypeStructs, e.g. from `jax.eval_shape(model.init, ...)`) from a
  PyTorch state dict of numpy arrays, strictly: `key(collection, path)` names each leaf's tensor, every tensor
  is used and every leaf filled; `adjust(name, value)` may change a value after the layout change. Returns
  numpy variables of the same structure."""
  state_dict = {k: v for k, v in state_dict.items() if not _IGNORED.match(k)}
  used = set()

  def fill(collection):
    def one(path, leaf):
      name = key(collection, path_str(path))
      if name not in state_dict:
        raise UserError(f"the {source} checkpoint has no '{name}' (is it the same architecture?)")
      used.add(name)
      value = torch_to_flax_array(name, state_dict[name], leaf.shape)
      return (adjust(name, value) if adjust else value).astype(leaf.dtype)
    return one

  out = {c: jax.tree_util.tree_map_with_path(fill(c), tree) for c, tree in variables.items()}
  unused = sorted(set(state_dict) - used)
  if unused:
    raise UserError(f"{len(unused)} {source} tensors have no Flax counterpart, e.g. '{unused[0]}'")
  return out


def timm_to_flax(state_dict: Mapping[str, Any], variables: Dict[str, Any]) -> Dict[str, Any]:
  """`state_dict_to_flax` by the timm rule."""
  return state_dict_to_flax(state_dict, variables, timm_key, "timm")


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


def torchvision_key(collection: str, path: str) -> str:
  """torchvision state-dict key of the Flax leaf `collection/path`: the timm rule, once the FPN's single
  convolutions `inner_blocks_<i>` / `layer_blocks_<i>` become torchvision's `Conv2dNormActivation`s (`.<i>.0`)."""
  path = re.sub(r"(^|/)(inner_blocks|layer_blocks)_(\d+)/", r"\1\2/layers_\3/layers_0/", path)
  try:
    return timm_key(collection, path)
  except UserError:
    raise UserError(f"no torchvision counterpart for Flax leaf {collection}/{path}")


def mmseg_key(collection: str, path: str, deep_stem: bool = True) -> str:
  """mmsegmentation state-dict key of a `SemanticFPN` leaf (`semantic_fpn_resnet50`): the timm rule, once the
  deep stem (`backbone/conv1/layers_<i>`, `backbone/bn1`) is ResNetV1c's `backbone.stem.<i>` (its last BN
  `stem.7`; `deep_stem=False`: ResNetV1b's `conv1` / `bn1`, timm's names) and the FPN's `inner_blocks_<i>` /
  `layer_blocks_<i>` are the neck's `lateral_convs.<i>.conv` / `fpn_convs.<i>.conv` (mmcv ConvModules)."""
  if deep_stem:
    path = re.sub(r"^backbone/conv1/layers_(\d+)/", r"backbone/stem/layers_\1/", path)
    path = re.sub(r"^backbone/bn1/", "backbone/stem/layers_7/", path)
  path = re.sub(r"(^|/)inner_blocks_(\d+)/", r"\1lateral_convs/layers_\2/conv/", path)
  path = re.sub(r"(^|/)layer_blocks_(\d+)/", r"\1fpn_convs/layers_\2/conv/", path)
  try:
    return timm_key(collection, path)
  except UserError:
    raise UserError(f"no mmsegmentation counterpart for Flax leaf {collection}/{path}")


class TorchvisionModel(NamedTuple):
  key: Callable[[str, str], str]  # (collection, Flax path) -> torchvision key
  num_classes: Callable[[Mapping[str, Any]], int]  # read from the state dict
  bn_eps: float  # the epsilon torchvision's published weights run their FrozenBatchNorm2d layers at


FLAX_BN_EPS = 1e-5  # models/resnet.py's BatchNorm


def _rcnn_classes(state_dict: Mapping[str, Any]) -> int:
  key = "roi_heads.box_predictor.cls_score.weight"
  if key not in state_dict:
    raise UserError(f"the torchvision checkpoint has no classifier '{key}'")
  return int(np.shape(state_dict[key])[0])


def retinanet_key(collection: str, path: str) -> str:
  """`torchvision_key`, with the RetinaNet head's `conv_<i>` as torchvision's `conv.<i>.0`."""
  return torchvision_key(collection, re.sub(r"(^|/)conv_(\d+)/", r"\1conv/layers_\2/layers_0/", path))


def _retinanet_classes(state_dict: Mapping[str, Any]) -> int:
  cls, reg = "head.classification_head.cls_logits.weight", "head.regression_head.bbox_reg.weight"
  if cls not in state_dict or reg not in state_dict:
    raise UserError(f"the torchvision checkpoint has no RetinaNet head '{cls}'")
  return int(np.shape(state_dict[cls])[0] // (np.shape(state_dict[reg])[0] // 4))  # A*K outputs, A anchors


# Registered model name -> how its torchvision weights convert.
TORCHVISION_MODELS: Dict[str, TorchvisionModel] = {
    "fasterrcnn_resnet50_fpn": TorchvisionModel(torchvision_key, _rcnn_classes, bn_eps=0.0),
    "maskrcnn_resnet50_fpn": TorchvisionModel(torchvision_key, _rcnn_classes, bn_eps=0.0),
    "retinanet_resnet50_fpn": TorchvisionModel(retinanet_key, _retinanet_classes, bn_eps=0.0),
}


def torchvision_detection_to_flax(state_dict: Mapping[str, Any], variables: Dict[str, Any],
                                  key: Callable[[str, str], str] = torchvision_key,
                                  bn_eps: float = FLAX_BN_EPS) -> Dict[str, Any]:
  """`state_dict_to_flax` for a torchvision detector; `bn_eps` is the checkpoint's BatchNorm epsilon (the
  running variances absorb its difference from Flax's: var + Flax's eps = var + the checkpoint's eps)."""
  def adjust(name, value):
    return value + (bn_eps - FLAX_BN_EPS) if name.endswith("running_var") else value
  return state_dict_to_flax(state_dict, variables, key, "torchvision", adjust)


def convert_torchvision(model_name: str, state_dict: Mapping[str, Any], torchvision_name: Optional[str] = None,
                        bn_eps: Optional[float] = None, **model_kwargs) -> Tuple[Any, Dict[str, Any]]:
  """(model, variables) for a registered detector holding a torchvision state dict's weights; the number of
  classes comes from the checkpoint. `torchvision_name` (default `model_name`) picks the conversion rules;
  `bn_eps` is the epsilon the checkpoint's FrozenBatchNorm2d layers run at (default: that of torchvision's
  published weights, 0.0 for the R-CNNs; 1e-5 for a model built without weights)."""
  name = torchvision_name or model_name
  if name not in TORCHVISION_MODELS:
    raise UserError(f"no torchvision conversion for '{name}'{did_you_mean(name, TORCHVISION_MODELS)} "
                    f"({', '.join(sorted(TORCHVISION_MODELS))})")
  rules = TORCHVISION_MODELS[name]
  model = create_model(model_name, **model_kwargs).clone(num_classes=rules.num_classes(state_dict))
  size = max(64, getattr(model, "min_size", 64))  # the parameters' shapes do not depend on the image size
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  return model, torchvision_detection_to_flax(state_dict, dict(abstract), rules.key,
                                              rules.bn_eps if bn_eps is None else bn_eps)


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m inception_zoo.convert", description=__doc__.split("\n")[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--timm", help="timm model name, e.g. inception_v4")
  source.add_argument("--torchvision", help=f"torchvision detector ({', '.join(sorted(TORCHVISION_MODELS))})")
  parser.add_argument("--checkpoint", required=True, help="timm / torchvision weights as .safetensors")
  parser.add_argument("--out", required=True, help="directory for the Orbax checkpoint")
  parser.add_argument("--model", default=None, help="inception_zoo model name (default: --timm / --torchvision)")
  parser.add_argument("--bn-eps", type=float, default=None,
                      help="--torchvision: the checkpoint's FrozenBatchNorm2d epsilon (default: that of "
                           "torchvision's published weights, 0 for its COCO_V1 R-CNNs)")
  args = parser.parse_args(argv)
  try:
    state_dict = read_safetensors(args.checkpoint)
    model_name = args.model or args.timm or args.torchvision
    if args.torchvision:
      model, variables = convert_torchvision(model_name, state_dict, args.torchvision, args.bn_eps)
    else:
      model, variables = convert_timm(model_name, state_dict)
    source = f"torchvision:{args.torchvision}" if args.torchvision else f"timm:{args.timm}"
    ckpt.save_weights(args.out, variables, {"model": model_name, "num_classes": model.num_classes,
                                            "source": source, "file": args.checkpoint})
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2)
  n = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  print(f"wrote {model_name} ({n:,} parameters, {model.num_classes} classes) to {args.out}")


if __name__ == "__main__":
  main()
