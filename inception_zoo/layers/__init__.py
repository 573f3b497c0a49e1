"""Building blocks shared by the model families (no model, training or data code here)."""
from inception_zoo.layers.common import (ConvBN, DropPath, Pool, Seq, check_image, classifier_head, concat,
                                         conv_init, dense_init, drop_path, drop_path_rates, l2_normalize,
                                         pairwise_distance, pixel_shuffle, scaled)
from inception_zoo.layers.transformer import Mlp, layer_norm

__all__ = ["ConvBN", "DropPath", "Mlp", "Pool", "Seq", "check_image", "classifier_head", "concat", "conv_init",
           "dense_init", "drop_path", "drop_path_rates", "l2_normalize", "layer_norm", "pairwise_distance",
           "pixel_shuffle", "scaled"]
