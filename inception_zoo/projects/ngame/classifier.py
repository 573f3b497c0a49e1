"""NGAME's second stage (Dahiya et al., WSDM 2023, Sec. 3; official `libs/model.py: ModelSShortlist`,
`libs/shortlist.py`, config `extreme` of LF-AmazonTitles-131K): one classifier per label, initialised
from the label's normalised embedding, trained on the frozen encoder's point embeddings against hard
negatives, and at test time an approximate-nearest-neighbour (ANNS) shortlist whose embedding and
classifier scores are fused.

Our reading where the code and the brief differ: the official classifiers take their negatives from
the clustered mini-batches with the same triplet loss (margin 0.2, 3 negatives); here the negatives
are each point's ANNS shortlist over the label embeddings (the labels it is most easily confused with),
with that loss, trained full-batch at CPU scale and on points sampled (with replacement) per step at
full scale. Fusion: beta * classifier cosine + (1 - beta) * embedding cosine
on the shortlist, beta = 0.5 (the official `beta`; the official inference also queries a second ANNS
over the classifiers, "dual MIPS", and can learn the fusion with a decision tree, `tools/score_fusion.py`).
The shortlist is exact top-k by matrix product, in chunks of queries (the authors use HNSW: hnswlib,
M = 100, efConstruction = efSearch = 300, 300 neighbours). The LF sets' test filter (reciprocal
point-label pairs) is applied as pyxclib's evaluation does: filtered labels are never predicted.
"""
import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from inception_zoo.layers import l2_normalize
from inception_zoo.projects.ngame.batching import is_label, triplet_margin_ohnm


@functools.partial(jax.jit, static_argnums=2)
def _top_k_similar(queries, keys, k):
  return jax.lax.top_k(queries @ keys.T, k)


def shortlist(queries: jax.Array, keys: jax.Array, k: int, chunk: int = 4096,
              exclude: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Exact maximum-inner-product search: the k keys (labels) most similar to each query, best first,
  never one of the (query, key) pairs of `exclude` (m, 2) (unless fewer than k others exist).
  Returns (indices (n, k), similarities (n, k))."""
  extra = int(np.bincount(exclude[:, 0]).max()) if exclude is not None and len(exclude) else 0
  kk = min(k + extra, len(keys))  # enough candidates to drop the excluded ones
  parts = [_top_k_similar(queries[i:i + chunk], keys, kk) for i in range(0, len(queries), chunk)]
  idx, sims = (np.concatenate([np.asarray(p[j]) for p in parts]) for j in (1, 0))
  if extra:
    pairs = sp.csr_matrix((np.ones(len(exclude)), (exclude[:, 0], exclude[:, 1])), shape=(len(idx), len(keys)))
    keep = np.argsort(is_label(pairs, np.arange(len(idx))[:, None], idx), axis=1, kind="stable")
    idx, sims = np.take_along_axis(idx, keep, 1), np.take_along_axis(sims, keep, 1)
  return idx[:, :k], sims[:, :k]


def padded_positives(y: sp.csr_matrix) -> Tuple[np.ndarray, np.ndarray]:
  """(n, max labels) label indices of each point (padded by repeating its last label) and the counts
  (a point without labels holds a placeholder; drop such points before training)."""
  y = sp.csr_matrix(y)
  counts = np.diff(y.indptr)
  width = max(int(counts.max(initial=0)), 1)
  cols = np.minimum(np.arange(width)[None, :], np.maximum(counts, 1)[:, None] - 1)
  return y.indices[np.minimum(y.indptr[:-1, None] + cols, max(len(y.indices) - 1, 0))], counts


def classifier_loss(docs: jax.Array, positives: jax.Array, counts: jax.Array, candidates: jax.Array,
                    negative: jax.Array, margin: float = 0.2, num_negatives: int = 3, batch_size: int = 0):
  """loss_fn(classifiers, key) for `fit`: per point one positive label drawn at every step, its
  shortlisted non-positive labels as negatives, the first stage's triplet loss on classifier cosines;
  over all points, or `batch_size` points drawn with replacement at every step."""

  def loss_fn(w, key):
    w = l2_normalize(w)
    if batch_size:
      rows = jax.random.randint(jax.random.fold_in(key, 1), (batch_size,), 0, docs.shape[0])
      return loss_on(w, key, *(a[rows] for a in (docs, positives, counts, candidates, negative)))
    return loss_on(w, key, docs, positives, counts, candidates, negative)

  def loss_on(w, key, docs, positives, counts, candidates, negative):
    pick = (jax.random.uniform(key, counts.shape) * counts).astype(jnp.int32)
    pos = jnp.take_along_axis(positives, pick[:, None], 1)[:, 0]
    pos_sim = jnp.sum(docs * w[pos], -1)
    sims = jnp.einsum("nd,nkd->nk", docs, w[candidates])
    return triplet_margin_ohnm(pos_sim, sims, negative, margin, num_negatives)

  return loss_fn


def fused_ranking(docs: jax.Array, label_emb: jax.Array, classifiers: jax.Array, k: int,
                  beta: float = 0.5, exclude: Optional[np.ndarray] = None, chunk: int = 1024
                  ) -> Tuple[np.ndarray, np.ndarray]:
  """Ranks each point's ANNS shortlist (k labels by embedding similarity, `exclude` as `shortlist`) by
  the fused score. Returns (ranked labels (n, k), fused scores (n, k))."""
  idx, knn = shortlist(docs, label_emb, k, exclude=exclude)
  docs, w = np.asarray(docs), np.asarray(l2_normalize(classifiers))
  # In chunks of points: the gathered (n, k, dim) classifiers of a whole LF test set would not fit.
  clf = np.concatenate([np.einsum("nd,nkd->nk", docs[i:i + chunk], w[idx[i:i + chunk]])
                        for i in range(0, len(idx), chunk)])
  fused = beta * clf + (1 - beta) * knn
  order = np.argsort(-fused, axis=1, kind="stable")
  return np.take_along_axis(idx, order, 1), np.take_along_axis(fused, order, 1)
