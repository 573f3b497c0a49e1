"""Model families; importing this package registers every model with `inception_zoo.registry`."""
from inception_zoo.models import (inception_next, inception_resnet, inception_v4, swinv2,  # noqa: F401
                                  vovnet)
