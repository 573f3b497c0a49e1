"""Tools around the models: FLOPs/MACs counting (`python -m inception_zoo.utils.flops`)."""
