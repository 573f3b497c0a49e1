"""inception_zoo: JAX/Flax reproductions of Inception-v4, Inception-ResNet and related papers."""
from inception_zoo.errors import UserError
from inception_zoo.registry import create_model, list_models, register_model
# The package's front door registers every model: the core's families, then the projects' networks
# (the core itself never imports a project).
from inception_zoo import models  # noqa: F401
from inception_zoo.projects.dagnn import dagnn as _dagnn  # noqa: F401
from inception_zoo.projects.drct import drct as _drct  # noqa: F401
from inception_zoo.projects.lighthgnn import hgnn as _hgnn  # noqa: F401
from inception_zoo.projects.mgd import models as _mgd_models  # noqa: F401
from inception_zoo.projects.poincare_resnet import poincare_resnet as _poincare_resnet  # noqa: F401
from inception_zoo.projects.simmim import simmim as _simmim  # noqa: F401
from inception_zoo.projects.terminator import terminator as _terminator  # noqa: F401
from inception_zoo.projects.vit_vqgan import vim as _vim, vit_vqgan as _vit_vqgan  # noqa: F401

__version__ = "0.1.0"
__all__ = ["UserError", "create_model", "list_models", "register_model"]
