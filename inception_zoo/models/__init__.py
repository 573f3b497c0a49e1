"""Model families; importing this package registers every model with `inception_zoo.registry`
(`list_models(task=...)` filters them by what they do)."""
from inception_zoo.models import (detection, iformer, inception_next, inception_resnet,  # noqa: F401
                                  inception_v3, inception_v4, mlp, mobilenet, prob_discriminator, resnet,
                                  segmentation, swinv2, vovnet)
