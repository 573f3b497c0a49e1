"""Extreme-classification metrics as the XC repository's pyxclib (`xclib.evaluation.xc_metrics`)
computes them: P@k, nDCG@k and propensity-scored P@k (PSP@k) with the propensity model of Jain, Prabhu,
Varma, "Extreme Multi-label Loss Functions for Recommendation, Tagging, Ranking & Other Missing Label
Applications", KDD 2016.

Predictions are given as `ranked` label indices, (n, k) best first (top-k of any score matrix: `top_k`);
ground truth `y` as an (n, L) 0/1 matrix, dense or scipy sparse. P@k and nDCG@k average over all n
points (a point without labels counts 0, as pyxclib); PSP@k is pyxclib's ratio of the mean propensity-
weighted precision of the prediction to that of the best possible ranking (the true labels sorted by
inverse propensity).
"""
from typing import Dict, Sequence

import numpy as np
import scipy.sparse as sp

from inception_zoo.errors import UserError


def inverse_propensity(y, a: float = 0.55, b: float = 1.5) -> np.ndarray:
  """1 / p_l = 1 + C (N_l + B)^-A, C = (ln N - 1)(B + 1)^A, N_l = training points of label l (KDD 2016,
  Eq. 3; A = 0.55, B = 1.5 in general, A = 0.6, B = 2.6 for the Amazon sets)."""
  n = y.shape[0]
  counts = np.asarray((y != 0).sum(axis=0)).ravel().astype(np.float64)
  c = (np.log(n) - 1.0) * (b + 1.0) ** a
  return 1.0 + c * (counts + b) ** (-a)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k largest scores per row, best first."""
  scores = np.asarray(scores)
  part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
  order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
  return np.take_along_axis(part, order, 1)


def _hits(ranked: np.ndarray, y) -> np.ndarray:
  """(n, k) 0/1: whether the j-th ranked label of point i is one of its labels."""
  ranked = np.asarray(ranked)
  if ranked.ndim != 2 or ranked.shape[0] != y.shape[0]:
    raise UserError(f"ranked predictions of shape {ranked.shape} do not match labels of shape {y.shape}")
  rows = np.arange(ranked.shape[0])[:, None]
  hits = y[rows, ranked]
  return (np.asarray(hits.todense() if sp.issparse(hits) else hits) != 0).astype(np.float64)


def precision_at_k(ranked, y, k: int) -> float:
  return float(_hits(ranked[:, :k], y).sum(1).mean() / k)


def ndcg_at_k(ranked, y, k: int) -> float:
  """DCG of the top k (gain 1 per true label, discount 1 / log2(rank + 1)) over the best DCG reachable
  with the point's number of labels."""
  discount = 1.0 / np.log2(np.arange(k) + 2.0)
  dcg = _hits(ranked[:, :k], y) @ discount
  num_true = np.minimum(np.asarray((y != 0).sum(axis=1)).ravel(), k).astype(int)
  ideal = np.concatenate([[0.0], np.cumsum(discount)])[num_true]
  return float(np.mean(np.where(ideal > 0, dcg / np.maximum(ideal, 1e-12), 0.0)))


def psprecision_at_k(ranked, y, inv_prop: np.ndarray, k: int) -> float:
  weights = inv_prop[np.asarray(ranked)[:, :k]]
  gained = (_hits(ranked[:, :k], y) * weights).sum(1).mean()
  # The best ranking puts the point's true labels with the largest inverse propensity first; the
  # true labels' weights are padded per row (a dense (n, L) matrix would not fit at full scale).
  y_weighted = sp.csr_matrix(sp.csr_matrix(y) != 0).multiply(inv_prop[None, :]).tocsr()
  lengths = np.diff(y_weighted.indptr)
  padded = np.zeros((y.shape[0], max(int(lengths.max(initial=0)), 1)))
  padded[np.arange(padded.shape[1]) < lengths[:, None]] = y_weighted.data
  best = -np.sort(-padded, axis=1)[:, :k].sum(1).mean()
  return float(gained / best) if best > 0 else 0.0


def xc_metrics(ranked, y, inv_prop: np.ndarray, ks: Sequence[int] = (1, 3, 5)) -> Dict[str, float]:
  """{'P@k', 'nDCG@k', 'PSP@k'} for each k in `ks`."""
  if np.shape(ranked)[1] < max(ks):
    raise UserError(f"{np.shape(ranked)[1]} ranked labels per point; the metrics need {max(ks)}")
  out = {}
  for k in ks:
    out[f"P@{k}"] = precision_at_k(ranked, y, k)
    out[f"nDCG@{k}"] = ndcg_at_k(ranked, y, k)
    out[f"PSP@{k}"] = psprecision_at_k(ranked, y, inv_prop, k)
  return out
