from inception_zoo.layers.common import ConvBN, DropPath, Pool, Seq, check_image, drop_path, drop_path_rates

__all__ = ["ConvBN", "DropPath", "Pool", "Seq", "check_image", "drop_path", "drop_path_rates"]
