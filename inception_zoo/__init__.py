"""inception_zoo: JAX/Flax reproductions of Inception-v4, Inception-ResNet and related papers."""
from inception_zoo.errors import UserError
from inception_zoo.registry import create_model, list_models, register_model
from inception_zoo import models  # noqa: F401  (registers every model family)

__version__ = "0.1.0"
__all__ = ["UserError", "create_model", "list_models", "register_model"]
