"""NGAME's second stage (Dahiya et al., WSDM 2023, Sec. 3; official `libs/model.py: ModelSShortlist`,
`libs/shortlist.py`, config `extreme` of LF-AmazonTitles-131K): one classifier per label, initialised
from the label's normalised embedding, trained on the frozen encoder's point embeddings against hard
negatives, and at test time an approximate-nearest-neighbour (ANNS) shortlist whose embedding and
classifier scores are fused.

Our reading where the code and the brief differ: the official classifiers take their negatives from
the clustered mini-batches with the same triplet loss (margin 0.2, 3 negatives); here the negatives
are each point's ANNS shortlist over the label embeddings (the labels it is most easily confused with),
with that loss, trained full-batch. Fusion: beta * classifier cosine + (1 - beta) * embedding cosine
on the shortlist, beta = 0.5 (the official `beta`; the official inference also queries a second ANNS
over the classifiers, "dual MIPS", and can learn the fusion with a decision tree, `tools/score_fusion.py`).
The shortlist is exact top-k by matrix product at CPU scale; the authors' choice at full scale is HNSW
(hnswlib, M = 100, efConstruction = efSearch = 300, 300 neighbours).
"""
import functools
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from inception_zoo.xc.batching import triplet_margin_ohnm
from inception_zoo.xc.encoder import l2_normalize


@functools.partial(jax.jit, static_argnums=2)
def _top_k_similar(queries, keys, k):
  return jax.lax.top_k(queries @ keys.T, k)


def shortlist(queries: jax.Array, keys: jax.Array, k: int, chunk: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
  """Exact maximum-inner-product search: the k keys (labels) most similar to each query, best first.
  Returns (indices (n, k), similarities (n, k))."""
  parts = [_top_k_similar(queries[i:i + chunk], keys, k) for i in range(0, len(queries), chunk)]
  return (np.concatenate([np.asarray(p[1]) for p in parts]), np.concatenate([np.asarray(p[0]) for p in parts]))


def padded_positives(y: sp.csr_matrix) -> Tuple[np.ndarray, np.ndarray]:
  """(n, max labels) label indices of each point (padded by repeating its last label) and the counts
  (a point without labels holds a placeholder; drop such points before training)."""
  y = sp.csr_matrix(y)
  counts = np.diff(y.indptr)
  width = max(int(counts.max(initial=0)), 1)
  cols = np.minimum(np.arange(width)[None, :], np.maximum(counts, 1)[:, None] - 1)
  return y.indices[np.minimum(y.indptr[:-1, None] + cols, max(len(y.indices) - 1, 0))], counts


def classifier_loss(docs: jax.Array, positives: jax.Array, counts: jax.Array, candidates: jax.Array,
                    negative: jax.Array, margin: float = 0.2, num_negatives: int = 3):
  """loss_fn(classifiers, key) for `fit`: per point one positive label drawn at every step, its
  shortlisted non-positive labels as negatives, the first stage's triplet loss on classifier cosines."""

  def loss_fn(w, key):
    w = l2_normalize(w)
    pick = (jax.random.uniform(key, counts.shape) * counts).astype(jnp.int32)
    pos = jnp.take_along_axis(positives, pick[:, None], 1)[:, 0]
    pos_sim = jnp.sum(docs * w[pos], -1)
    sims = jnp.einsum("nd,nkd->nk", docs, w[candidates])
    return triplet_margin_ohnm(pos_sim, sims, negative, margin, num_negatives)

  return loss_fn


def fused_ranking(docs: jax.Array, label_emb: jax.Array, classifiers: jax.Array, k: int,
                  beta: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
  """Ranks each point's ANNS shortlist (k labels by embedding similarity) by the fused score.
  Returns (ranked labels (n, k), fused scores (n, k))."""
  idx, knn = shortlist(docs, label_emb, k)
  clf = np.einsum("nd,nkd->nk", np.asarray(docs), np.asarray(l2_normalize(classifiers))[idx])
  fused = beta * clf + (1 - beta) * knn
  order = np.argsort(-fused, axis=1, kind="stable")
  return np.take_along_axis(idx, order, 1), np.take_along_axis(fused, order, 1)
