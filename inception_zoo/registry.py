"""Models are found by name: `@register_model` on a builder, `create_model(name, ...)` to build.

Mirrors timm's registry: the builder's function name is the model name, its keyword arguments are the
options a user may override (`create_model('inception_v4', num_classes=10, width=0.125)`).
"""
from typing import Callable, Dict, List

import flax.linen as nn

from inception_zoo.errors import UserError, did_you_mean

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
  if fn.__name__ in _MODELS:
    raise ValueError(f"model '{fn.__name__}' is registered twice")
  _MODELS[fn.__name__] = fn
  return fn


def list_models(pattern: str = "*") -> List[str]:
  import fnmatch
  _import_all()
  return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_options(name: str) -> List[str]:
  """Options `create_model(name, ...)` accepts: the fields of the module its builder returns."""
  _import_all()
  module = _MODELS[name]()  # building a linen module is free: parameters come later, from init
  return sorted(f for f in module.__dataclass_fields__ if f not in ("parent", "name"))


def create_model(name: str, **kwargs) -> nn.Module:
  """Builds a registered model; unknown names and options get a one-line error with a suggestion."""
  _import_all()
  if name not in _MODELS:
    raise UserError(f"unknown model '{name}'{did_you_mean(name, _MODELS)} "
                    f"(list_models() shows the {len(_MODELS)} registered models)")
  options = model_options(name)
  for key in kwargs:
    if key not in options:
      raise UserError(f"model '{name}' has no option '{key}'{did_you_mean(key, options)}")
  return _MODELS[name](**kwargs)


def _import_all():
  # Importing the package registers every model family.
  import inception_zoo.models  # noqa: F401
