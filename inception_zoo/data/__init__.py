from inception_zoo.data import detection, pp, segmentation  # these register their datasets and pp ops
from inception_zoo.data.datasets import Dataset, get_dataset
from inception_zoo.data.pipeline import eval_batches, train_batches

__all__ = ["Dataset", "detection", "eval_batches", "get_dataset", "pp", "segmentation", "train_batches"]
