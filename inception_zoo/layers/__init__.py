from inception_zoo.layers.common import ConvBN, Pool, Seq, check_image

__all__ = ["ConvBN", "Pool", "Seq", "check_image"]
