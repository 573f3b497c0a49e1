"""Pytree helpers every layer of the library may use (it imports nothing of the library)."""


def path_str(path) -> str:
  """'params/features/layers_0/conv/kernel' for a pytree key path."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return "/".join(parts)
