"""Prototypical networks: the Conv-4 embedding and the episodic prototypical loss.

Snell, Swersky, Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017, as used by
Hendryx, KC, Walls, Morrison, "Federated Reconnaissance: Efficient, Distributed, Class-Incremental
Learning", arXiv 2109.00150, 2021 (paper 29 of the zoo).

Conv-4: four blocks of [3x3 conv (64 filters, 'SAME'), batch norm, ReLU, 2x2 max-pool], flattened;
on 28x28x1 Omniglot it gives a 64-d embedding and 111,936 parameters (excluding the BN statistics).
The loss: class prototypes are the mean support embeddings, a query's logits are minus its squared
Euclidean distances to them, cross-entropy on the queries.
Our reading: after episodic training, the BN running statistics are set once to the statistics of
the base-class training set (`train.state.calibrate_batch_stats`), so the frozen embedding at test time does not
depend on the test batch.
"""
from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError


class Conv4(nn.Module):
  """The four-block convolutional embedding; input (N, H, W, C) with H, W >= 2**depth."""
  width: int = 64
  depth: int = 4
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if x.ndim != 4 or min(x.shape[1:3]) < 2 ** self.depth:
      raise UserError(f"Conv4 of depth {self.depth} needs images (N, H, W, C) of at least "
                      f"{2 ** self.depth}x{2 ** self.depth}; got {x.shape}")
    for i in range(self.depth):
      x = nn.Conv(self.width, (3, 3), padding="SAME", name=f"conv{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=f"bn{i}")(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    return x.reshape(x.shape[0], -1)


class MLPEmbedding(nn.Module):
  """A two-layer ReLU embedding of flattened inputs: the CPU stand-in for Conv-4 (no batch norm)."""
  width: int = 128
  dim: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    del train
    h = nn.relu(nn.Dense(self.width, name="fc0")(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.dim, name="fc1")(h)


class SoftmaxClassifier(nn.Module):
  """The fine-tuned softmax baseline: an embedding and a linear head over all classes."""
  embedding: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    return nn.Dense(self.num_classes, name="head")(self.embedding(x, train=train))


def squared_distances(x: jax.Array, prototypes: jax.Array) -> jax.Array:
  return jnp.sum((x[:, None, :] - prototypes[None]) ** 2, -1)


def prototype_logits(embeddings: jax.Array, prototypes: jax.Array) -> jax.Array:
  return -squared_distances(embeddings, prototypes)


def prototypical_loss(support: jax.Array, query: jax.Array, n_way: int) -> Tuple[jax.Array, jax.Array]:
  """Episode loss and accuracy. `support` (n_way * k_shot, D) and `query` (n_way * n_query, D) are
  grouped by class in the same order (rows i * k ... (i + 1) * k - 1 belong to class i)."""
  prototypes = support.reshape(n_way, -1, support.shape[-1]).mean(1)
  labels = jnp.repeat(jnp.arange(n_way), query.shape[0] // n_way)
  logits = prototype_logits(query, prototypes)
  loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
  return loss, jnp.mean(jnp.argmax(logits, -1) == labels)


def class_index_table(labels, classes) -> jax.Array:
  """(len(classes), m) indices of each class's examples, cut to the smallest class's count m."""
  rows = [np.flatnonzero(np.asarray(labels) == c) for c in classes]
  if min(len(r) for r in rows) == 0:
    raise UserError(f"some of the classes {list(classes)} have no examples")
  m = min(len(r) for r in rows)
  return jnp.asarray(np.stack([r[:m] for r in rows]))


def sample_episode(key: jax.Array, table: jax.Array, n_way: int, k_shot: int, n_query: int
                   ) -> Tuple[jax.Array, jax.Array]:
  """Indices of an episode: n_way classes of `table`, k_shot support + n_query query examples each,
  without replacement; returns (support (n_way * k_shot,), query (n_way * n_query,))."""
  k_class, k_ex = jax.random.split(key)
  classes = jax.random.permutation(k_class, table.shape[0])[:n_way]
  picks = jax.vmap(lambda k, row: jax.random.permutation(k, row)[:k_shot + n_query])(
      jax.random.split(k_ex, n_way), table[classes])
  return picks[:, :k_shot].reshape(-1), picks[:, k_shot:].reshape(-1)
