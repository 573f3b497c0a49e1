"""Hypergraphs as incidence lists: the HGNN smoothing and vertex-to-hyperedge means of LightHGNN
(Feng et al., "LightHGNN: Distilling Hypergraph Neural Networks into MLPs for 100x Faster Inference",
ICLR 2024), and a hypergraph stochastic block model with low-SNR vertex features.

A hypergraph is its (vertex, hyperedge) incidence pairs, the nonzeros of H, plus per-vertex and
per-hyperedge scales, so HGNN's Dv^-1/2 H W_e De^-1 H^T Dv^-1/2 X is two `segment_sum`s over the
pairs. Degrees follow dhg: d(v) = sum of the weights of the hyperedges holding v, d(e) = |e|.
Isolated vertices get a singleton hyperedge (the official code's `fix_iso_v`), so every d(v) > 0.
"""
import dataclasses
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError


class Hypergraph(NamedTuple):
  """Incidence pairs (vertices[i] in hyperedge edges[i]) and the scales of the HGNN operator; the
  vertex and hyperedge counts are the shapes of vertex_scale and edge_scale."""
  vertices: jax.Array  # [P] int32
  edges: jax.Array  # [P] int32
  vertex_scale: jax.Array  # [N] d(v)^-1/2
  edge_scale: jax.Array  # [M] w(e) / d(e)
  edge_size_inv: jax.Array  # [M] 1 / |e|

  @property
  def num_vertices(self) -> int:
    return self.vertex_scale.shape[0]

  @property
  def num_edges(self) -> int:
    return self.edge_scale.shape[0]


def from_incidence(vertices, edges, num_vertices: int, weights: Optional[np.ndarray] = None) -> Hypergraph:
  """A hypergraph from incidence pairs: hyperedge ids are renumbered 0..M-1 in order of first id
  (`weights[j]` belongs to the j-th smallest id), repeated pairs count once, isolated vertices get a
  singleton hyperedge of weight 1."""
  vertices, edges = np.asarray(vertices, np.int64).ravel(), np.asarray(edges, np.int64).ravel()
  if vertices.shape != edges.shape:
    raise UserError(f"incidence vertices and edges differ in length: {vertices.size} vs {edges.size}")
  if vertices.size and (vertices.min() < 0 or vertices.max() >= num_vertices):
    raise UserError(f"vertex ids must lie in [0, {num_vertices}), got [{vertices.min()}, {vertices.max()}]")
  ids, edges = np.unique(edges, return_inverse=True)
  weights = np.ones(len(ids)) if weights is None else np.asarray(weights, np.float64)
  if weights.shape != (len(ids),) or (weights <= 0).any():
    raise UserError(f"need one positive weight per hyperedge ({len(ids)}), got shape {weights.shape}")
  pairs = np.unique(edges * num_vertices + vertices)
  edges, vertices = pairs // num_vertices, pairs % num_vertices
  isolated = np.setdiff1d(np.arange(num_vertices), vertices)
  vertices = np.concatenate([vertices, isolated])
  edges = np.concatenate([edges, len(ids) + np.arange(len(isolated))])
  weights = np.concatenate([weights, np.ones(len(isolated))])
  size = np.bincount(edges, minlength=len(weights)).astype(np.float64)
  degree = np.bincount(vertices, weights=weights[edges], minlength=num_vertices)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return Hypergraph(jnp.asarray(vertices, jnp.int32), jnp.asarray(edges, jnp.int32), f32(degree ** -0.5),
                    f32(weights / size), f32(1.0 / size))


def from_hyperedges(hyperedges: Sequence[Sequence[int]], num_vertices: int,
                    weights: Optional[np.ndarray] = None) -> Hypergraph:
  """A hypergraph from a list of vertex lists (empty hyperedges are an error)."""
  sizes = [len(e) for e in hyperedges]
  if 0 in sizes:
    raise UserError(f"hyperedge {sizes.index(0)} is empty")
  vertices = np.concatenate([np.asarray(e, np.int64) for e in hyperedges]) if hyperedges else np.zeros(0, np.int64)
  return from_incidence(vertices, np.repeat(np.arange(len(sizes)), sizes), num_vertices, weights)


def v2e_sum(x: jax.Array, hg: Hypergraph) -> jax.Array:
  """H^T x: per hyperedge, the sum of its vertices' rows, shape [M, C]."""
  return jax.ops.segment_sum(x[hg.vertices], hg.edges, num_segments=hg.num_edges)


def v2e_mean(x: jax.Array, hg: Hypergraph) -> jax.Array:
  """Per hyperedge, the mean of its vertices' rows (LightHGNN+'s hyperedge-level predictions)."""
  return v2e_sum(x, hg) * hg.edge_size_inv[:, None]


def smooth(x: jax.Array, hg: Hypergraph) -> jax.Array:
  """Dv^-1/2 H W_e De^-1 H^T Dv^-1/2 x for vertex features x of shape [N, C]."""
  if x.shape[0] != hg.num_vertices:
    raise UserError(f"features have {x.shape[0]} rows for a hypergraph of {hg.num_vertices} vertices")
  e = v2e_sum(x * hg.vertex_scale[:, None], hg) * hg.edge_scale[:, None]
  return jax.ops.segment_sum(e[hg.edges], hg.vertices, num_segments=hg.num_vertices) * hg.vertex_scale[:, None]


@dataclasses.dataclass(frozen=True)
class HypergraphData:
  """Vertex features, labels and the hypergraph's incidence pairs (vertex ids, hyperedge ids)."""
  features: np.ndarray  # [N, F] float32
  labels: np.ndarray  # [N] int32
  incidence: np.ndarray  # [2, P]
  num_classes: int

  @property
  def num_vertices(self) -> int:
    return self.features.shape[0]

  def hypergraph(self) -> Hypergraph:
    return from_incidence(self.incidence[0], self.incidence[1], self.num_vertices)


def hypergraph_sbm(num_classes: int = 5, class_size: int = 100, num_edges: int = 500, min_size: int = 2,
                   max_size: int = 6, p_intra: float = 0.8, feature_dim: int = 32, signal: float = 0.4,
                   seed: int = 0) -> HypergraphData:
  """A hypergraph stochastic block model: each of `num_edges` hyperedges has a uniform size in
  [min_size, max_size]; with probability `p_intra` its vertices are drawn from one random class, else
  from all vertices. Vertex v has label v // class_size and features `signal` x its class's random
  Gaussian centroid + standard normal noise (low signal: the features alone classify poorly)."""
  if not 1 <= min_size <= max_size:
    raise UserError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
  if not 0 <= p_intra <= 1:
    raise UserError(f"p_intra must be a probability, got {p_intra}")
  rng = np.random.default_rng(seed)
  n = num_classes * class_size
  sizes = rng.integers(min_size, max_size + 1, num_edges)
  edge = np.repeat(np.arange(num_edges), sizes)
  intra = (rng.random(num_edges) < p_intra)[edge]
  block = rng.integers(num_classes, size=num_edges)[edge]
  vertex = np.where(intra, block * class_size + rng.integers(class_size, size=edge.size),
                    rng.integers(n, size=edge.size))
  labels = np.arange(n) // class_size
  centroids = rng.normal(size=(num_classes, feature_dim))
  features = signal * centroids[labels] + rng.normal(size=(n, feature_dim))
  return HypergraphData(features.astype(np.float32), labels.astype(np.int32), np.stack([vertex, edge]),
                        num_classes)
