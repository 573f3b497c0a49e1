from inception_zoo.data import pp
from inception_zoo.data.datasets import Dataset, get_dataset
from inception_zoo.data.pipeline import eval_batches, train_batches

__all__ = ["Dataset", "eval_batches", "get_dataset", "pp", "train_batches"]
