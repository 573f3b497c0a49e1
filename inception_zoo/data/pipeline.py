"""Input pipelines: deterministic, per-host, resumable by step.

Training: the source is shuffled (a new permutation each epoch), preprocessed with a generator derived
from the seed and the example's position, and cut into global batches of `global_batch` examples.
Process p of P reads only rows [p*b, (p+1)*b) of each global batch (b = global_batch / P), so the
global batch is the same whatever the number of hosts, and batch k is a pure function of
(seed, k): the position of the iterator is the step, which the checkpoint stores.

Evaluation: every example once, in order, the last batch padded and masked.
"""
from typing import Any, Callable, Dict, Iterator

import grain
import jax
import numpy as np

from inception_zoo.data import datasets, pp
from inception_zoo.errors import UserError

Batch = Dict[str, np.ndarray]


def local_batch_size(global_batch: int) -> int:
  n = jax.process_count()
  if global_batch % n:
    raise UserError(f"batch size {global_batch} does not divide over {n} processes")
  return global_batch // n


def train_batches(source, preprocess: Callable, *, global_batch: int, seed: int,
                  start_batch: int = 0, num_threads: int = 4,
                  prefetch: int = 2) -> Iterator[Batch]:
  """Endless iterator over this process's part of global batches start_batch, start_batch+1, ..."""
  if len(source) < global_batch:
    raise UserError(f"batch size {global_batch} is larger than the dataset ({len(source)} examples)")
  b, p, n = local_batch_size(global_batch), jax.process_index(), jax.process_count()
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  ds = ds.random_map(lambda ex, rng: preprocess(ex, rng))
  # Local batches in order: global batch k is local batches k*n .. k*n+n-1; this process takes its one.
  ds = ds.batch(b, drop_remainder=True)[p + start_batch * n::n]
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch * b)
  return iter(ds.to_iter_dataset(options))


def eval_batches(source, preprocess: Callable, *, global_batch: int,
                 num_threads: int = 4) -> Iterator[Batch]:
  """Every example once; rows past the end repeat the last example with `mask` 0."""
  b, p = local_batch_size(global_batch), jax.process_index()
  num = len(source)
  steps = -(-num // global_batch)
  rng = np.random.default_rng(0)  # eval ops are deterministic; the generator is a formality

  def load(index: int):
    ex = preprocess(source[min(index, num - 1)], rng)
    ex["mask"] = np.float32(index < num)
    return ex

  # Example indices of this process's rows, batch by batch.
  indices = [k * global_batch + p * b + i for k in range(steps) for i in range(b)]
  ds = grain.MapDataset.source(indices).map(load).batch(b)
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * b)
  return iter(ds.to_iter_dataset(options))


def preview(source, preprocess: Callable) -> Dict[str, Any]:
  """The first example after preprocessing, to check shapes before compiling anything."""
  return preprocess(source[0], np.random.default_rng(0))


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  return max(1, num_examples // global_batch)


def train_and_eval_input(inp, hint: str = "", same_shape: bool = True):
  """(train Dataset, eval Dataset, train pp, eval pp, image shape) of a config's `input` block; with
  `same_shape` the two pp strings must give images of one shape (`hint` says how, in the error)."""
  train = datasets.get_dataset(inp.data, inp.train_split, inp.get("data_dir"))
  test = datasets.get_dataset(inp.data, inp.eval_split, inp.get("data_dir"))
  pp_train, pp_eval = pp.build(inp.pp_train), pp.build(inp.pp_eval)
  train_shape = preview(train.source, pp_train)["image"].shape
  eval_shape = preview(test.source, pp_eval)["image"].shape
  if same_shape and train_shape != eval_shape:
    raise UserError(f"pp_train gives images of shape {train_shape} but pp_eval {eval_shape}{hint}")
  return train, test, pp_train, pp_eval, train_shape
