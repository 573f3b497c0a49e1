"""Model families; importing this package registers every model with `inception_zoo.registry`."""
from inception_zoo.models import inception_resnet, inception_v4  # noqa: F401
