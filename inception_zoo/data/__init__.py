from inception_zoo.data import pp
from inception_zoo.data.datasets import Dataset, get_dataset
from inception_zoo.data.pipeline import Position, eval_batches, train_batches

__all__ = ["Dataset", "Position", "eval_batches", "get_dataset", "pp", "train_batches"]
