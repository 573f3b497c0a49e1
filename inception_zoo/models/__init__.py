"""Model families; importing this package registers every model with `inception_zoo.registry`."""
from inception_zoo.models import (iformer, inception_next, inception_resnet, inception_v4,  # noqa: F401
                                  swinv2, vovnet)
from inception_zoo.models import mobilenet  # noqa: F401
from inception_zoo.models import inception_v3, resnet  # noqa: F401
