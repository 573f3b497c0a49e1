"""GCN propagation as a sparse op, and the over-smoothing metric of Liu, Gao and Ji, "Towards Deeper
Graph Neural Networks" (KDD 2020).

The normalised adjacency Â = D̃^-1/2 (A + I) D̃^-1/2 (Kipf & Welling's renormalisation, the matrix
DAGNN propagates with) is kept as a weighted edge list, and one propagation step is a gather over the
senders and a `jax.ops.segment_sum` onto the receivers: O(E) work and memory, never an N x N matrix.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError


class Adjacency(NamedTuple):
  """The weighted directed edges of Â, self-loops included: row `receivers[i]` of Â holds
  `weights[i]` in column `senders[i]`. The node count is the feature matrix's first dimension."""
  senders: jax.Array
  receivers: jax.Array
  weights: jax.Array


def normalized_adjacency(edges, num_nodes: int) -> Adjacency:
  """Â from an undirected edge list of shape [2, E] (each edge once or in both directions; duplicates
  and self-loops in the list are dropped, then one self-loop of weight 1 is added to every node)."""
  edges = np.asarray(edges)
  if edges.ndim != 2 or edges.shape[0] != 2:
    raise UserError(f"edges must have shape [2, E], got {edges.shape}")
  if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
    raise UserError(f"edge endpoints must lie in [0, {num_nodes}), got [{edges.min()}, {edges.max()}]")
  edges = edges[:, edges[0] != edges[1]]
  both = np.unique(np.concatenate([edges, edges[::-1]], axis=1), axis=1)
  loops = np.arange(num_nodes)
  senders = np.concatenate([both[0], loops])
  receivers = np.concatenate([both[1], loops])
  degree = np.bincount(receivers, minlength=num_nodes).astype(np.float32)  # >= 1: the self-loop
  inv_sqrt = degree ** -0.5
  return Adjacency(jnp.asarray(senders, jnp.int32), jnp.asarray(receivers, jnp.int32),
                   jnp.asarray(inv_sqrt[senders] * inv_sqrt[receivers]))


def propagate(x: jax.Array, adj: Adjacency) -> jax.Array:
  """One step Â x for node features x of shape [N, C]."""
  messages = adj.weights[:, None] * x[adj.senders]
  return jax.ops.segment_sum(messages, adj.receivers, num_segments=x.shape[0])


def propagate_steps(x: jax.Array, adj: Adjacency, k: int) -> jax.Array:
  """[Â^0 x, Â^1 x, ..., Â^k x] stacked to shape [k + 1, N, C] (one scanned step: compile time does not
  grow with k)."""
  if k < 0:
    raise UserError(f"the number of propagation steps must be >= 0, got {k}")

  def step(h, _):
    h = propagate(h, adj)
    return h, h

  _, hs = jax.lax.scan(step, x, None, length=k)
  return jnp.concatenate([x[None], hs], axis=0)


def smoothness(x: jax.Array) -> jax.Array:
  """The paper's smoothness metric value SMV_G (Sec. 3.2): the mean over nodes i of the mean over
  j != i of D(x_i, x_j) = ||x_i / ||x_i|| - x_j / ||x_j|| || / 2. It is 0 when every row points the
  same way (over-smoothed) and at most 1. Quadratic in N: a diagnostic for small graphs."""
  n = x.shape[0]
  if n < 2:
    raise UserError(f"smoothness needs at least 2 nodes, got {n}")
  u = x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  # Row by row as differences (memory O(N C)); the Gram form 2 - 2 u_i.u_j loses the small distances
  # of an over-smoothed graph to float32 cancellation.
  per_node = jax.lax.map(lambda ui: jnp.sum(jnp.linalg.norm(u - ui, axis=1)), u)
  return jnp.sum(per_node) / (2 * n * (n - 1))
