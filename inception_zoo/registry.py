"""Models are found by name: `@register_model` on a builder, `create_model(name, ...)` to build.

Mirrors timm's registry: the builder's function name is the model name, its keyword arguments are the
options a user may override (`create_model('inception_v4', num_classes=10, width=0.125)`). The registry
imports no model: importing `inception_zoo` (which any `inception_zoo.*` import does first) imports
`inception_zoo.models`, whose modules register themselves.
"""
import fnmatch
import typing
from typing import Callable, Dict, List, Optional, Sequence

import flax.linen as nn

from inception_zoo.errors import UserError, did_you_mean

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
_TAGS: Dict[str, tuple] = {}
_OPTIONS: Dict[str, type] = {}
# What a model does, for `list_models(task=...)`; a model may have several. 'classification' models are
# the image backbones: `__call__(x, *, train)` on NHWC images -> (logits, {'C1'..'C5', 'pre_logits'}).
TASKS = ("classification", "self-supervised", "generative", "super-resolution", "graph", "sequence",
         "hyperbolic", "distillation", "detection", "segmentation")


def register_model(fn: Optional[Callable[..., nn.Module]] = None, *, tags: Sequence[str] = ("classification",),
                   options: Optional[type] = None):
  """`@register_model` (an image classifier) or `@register_model(tags=(...))` on a builder whose return
  annotation is the module class it builds; its fields are the options, unless `options` names the
  class whose fields the builder takes (a wrapper's encoder)."""

  def register(fn):
    if fn.__name__ in _MODELS:
      raise ValueError(f"model '{fn.__name__}' is registered twice")
    unknown = [t for t in tags if t not in TASKS]
    if unknown:
      raise ValueError(f"model '{fn.__name__}': unknown task tag {unknown[0]!r} ({', '.join(TASKS)})")
    _MODELS[fn.__name__], _TAGS[fn.__name__] = fn, tuple(tags)
    if options is not None:
      _OPTIONS[fn.__name__] = options
    return fn

  return register(fn) if fn is not None else register


def list_models(pattern: str = "*", task: Optional[str] = None) -> List[str]:
  """Registered names matching the glob `pattern`, only those tagged `task` when given."""
  if task is not None and task not in TASKS:
    raise UserError(f"unknown task '{task}'{did_you_mean(task, TASKS)} ({', '.join(TASKS)})")
  return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern) and (task is None or task in _TAGS[n]))


def model_tags(name: str) -> tuple:
  return _TAGS[name]


def model_options(name: str) -> List[str]:
  """Options `create_model(name, ...)` accepts: the fields of the module class its builder returns."""
  cls = _OPTIONS.get(name) or typing.get_type_hints(_MODELS[name])["return"]
  return sorted(f for f in cls.__dataclass_fields__ if f not in ("parent", "name"))


def create_model(name: str, **kwargs) -> nn.Module:
  """Builds a registered model; unknown names and options get a one-line error with a suggestion."""
  if name not in _MODELS:
    raise UserError(f"unknown model '{name}'{did_you_mean(name, _MODELS)} "
                    f"(list_models() shows the {len(_MODELS)} registered models)")
  options = model_options(name)
  for key in kwargs:
    if key not in options:
      raise UserError(f"model '{name}' has no option '{key}'{did_you_mean(key, options)}")
  return _MODELS[name](**kwargs)
