"""NGAME's negative-mining-aware mini-batching (Dahiya et al., "NGAME: Negative Mining-aware
Mini-batching for Extreme Classification", WSDM 2023, Sec. 3; official code
Extreme-classification/ngame, `libs/shortlist.py: ClusteringIndex`, `libs/loss.py`).

Every `tau` epochs the training points are clustered on their current embeddings into balanced clusters
(recursive balanced 2-means on unit vectors, pyxclib's `cluster_balance` with `b_kmeans_dense`); an
epoch shuffles the clusters and cuts their concatenation into mini-batches, so a batch holds few clusters
of similar points, and the positive labels of a point's neighbours are its in-batch negatives: hard ones,
at no mining cost. The cluster size follows a curriculum: 1 (random batches) until the first curriculum
epoch, doubled at each listed epoch (the official LF-AmazonTitles-131K schedule: epochs 10, 20, 25, 50,
75, 100, 125, 150, 200; refresh every 5 epochs).

Each point brings one positive label drawn from its labels (the official doc-side batching); the loss
is the official triplet margin loss with online hard negative mining: per point, the `k` most similar
in-batch labels that are not among its positives, hinge max(0, s_neg - s_pos + margin), margin 0.3 in
the first stage, each violating negative weighted by a softmax of its similarity / 0.1 (the authors'
"aggressive" option), averaged over points and negatives.

Stage 1 runs on the shared step loop (`train/loop.run_steps`), one mini-batch per step, so it
checkpoints, stops at a non-finite loss and resumes exactly: its state (`init_state`) holds each training
point's current cluster beside the parameters, and the batch at step i is a function of the seed, i and
those clusters (`stage_one_step`).
"""
from typing import Any, Callable, Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

from inception_zoo.errors import UserError
from inception_zoo.train.state import apply_gradients


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def split_in_halves(x: np.ndarray, clusters: Sequence[np.ndarray], rng: np.random.Generator,
                    tol: float = 1e-4, max_iter: int = 50) -> List[np.ndarray]:
  """Splits every cluster (an array of row indices of `x`) in two halves whose sizes differ by at most
  one, by spherical 2-means under a balance constraint (pyxclib's `b_kmeans_dense`): the members are
  sorted by how much closer they are to one centroid than to the other and the sorted list is cut in
  the middle; centroids are the normalised means of the halves. All clusters of one level of the
  recursion are split together (padded to the largest), until the mean within-half similarity gains
  less than `tol`. Returns the non-empty halves, two per cluster of two or more points."""
  sizes = np.array([len(c) for c in clusters])
  width, rows = int(sizes.max()), np.arange(len(clusters))
  valid = np.arange(width)[None, :] < sizes[:, None]
  index = np.zeros(valid.shape, np.int64)
  index[valid] = np.concatenate(clusters)
  pts = _unit(x[index]) * valid[..., None]
  first = rng.integers(0, sizes)  # two distinct random members per cluster as the initial centroids
  second = (first + 1 + rng.integers(0, np.maximum(sizes - 1, 1))) % sizes
  centroids = pts[rows[:, None], np.stack([first, second], 1)]
  half = ((sizes + 1) // 2)[:, None]
  old = -np.inf
  for _ in range(max_iter):
    # Products as sums of elementwise products: batched matmuls of this shape are slower on CPU.
    sim = np.stack([np.sum(pts * centroids[:, None, k], -1) for k in range(2)], -1)  # (C, W, 2)
    order = np.argsort(np.where(valid, sim[..., 1] - sim[..., 0], np.inf), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(width)[None, :].repeat(len(rows), 0), 1)
    halves = np.stack([rank < half, valid & (rank >= half)], 1).astype(pts.dtype)  # (C, 2, W)
    new = np.sum(halves.transpose(0, 2, 1) * sim) / sizes.sum()
    centroids = _unit(np.stack([np.sum(halves[:, k, :, None] * pts, 1) for k in range(2)], 1))
    if new - old < tol:
      break
    old = new
  ordered = np.take_along_axis(index, order, 1)
  return [h for c in rows for h in (ordered[c, :half[c, 0]], ordered[c, half[c, 0]:sizes[c]]) if len(h)]


def balanced_clusters(embeddings: np.ndarray, cluster_size: int, rng: np.random.Generator
                      ) -> List[np.ndarray]:
  """Recursive balanced 2-means down to clusters of about `cluster_size` points (the number of clusters
  is the power of two nearest to n / cluster_size; all sizes within one of each other)."""
  n = len(embeddings)
  if cluster_size < 1:
    raise UserError(f"cluster size {cluster_size} < 1")
  depth = max(0, int(round(np.log2(n / cluster_size))))
  clusters = [np.arange(n)]
  for _ in range(depth):
    clusters = split_in_halves(embeddings, clusters, rng)
  return clusters


def cluster_size_at(epoch: int, curriculum: Sequence[int], initial: int = 1) -> int:
  """The curriculum: `initial`, doubled at each epoch of `curriculum` reached."""
  return initial * 2 ** sum(epoch >= e for e in curriculum)


def refresh_due(epoch: int, curriculum: Sequence[int], tau: int) -> bool:
  """Clusters are recomputed every `tau` epochs from the first curriculum epoch on (official rule)."""
  return bool(curriculum) and epoch >= curriculum[0] and epoch % tau == 0


def cluster_ids(clusters: Sequence[np.ndarray]) -> np.ndarray:
  """(n,) int32: the index of each point's cluster (the form a checkpoint keeps a clustering in)."""
  ids = np.empty(sum(len(c) for c in clusters), np.int32)
  ids[np.concatenate(clusters)] = np.repeat(np.arange(len(clusters), dtype=np.int32), [len(c) for c in clusters])
  return ids


def epoch_batches(cluster_of: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
  """(steps, batch_size) point indices: the clusters (`cluster_of`, each point's cluster index) in random
  order, concatenated, cut every `batch_size` points (the incomplete last batch is dropped: one compiled
  shape)."""
  place = rng.permutation(int(cluster_of.max()) + 1)  # each cluster's place in the epoch
  order = np.argsort(place[cluster_of], kind="stable")
  steps = len(order) // batch_size
  if steps == 0:
    raise UserError(f"batch size {batch_size} is larger than the {len(order)} training points")
  return order[:steps * batch_size].reshape(steps, batch_size)


def sample_positives(y: sp.csr_matrix, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One label drawn uniformly from each point's labels (points without labels are not allowed)."""
  y = sp.csr_matrix(y)
  starts, counts = y.indptr[points], np.diff(y.indptr)[points]
  if np.any(counts == 0):
    raise UserError("training points without labels cannot be batched; drop them first")
  return y.indices[starts + (rng.random(points.shape) * counts).astype(np.int64)]


def is_label(y: sp.csr_matrix, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Bools of the broadcast shape of `points` and `labels`: whether each label is one of the point's."""
  rows, cols = np.broadcast_arrays(points, labels)
  return np.asarray(sp.csr_matrix(y)[rows.ravel(), cols.ravel()]).reshape(rows.shape) != 0


def batch_targets(y: sp.csr_matrix, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(..., B, B) bools: [i, j] = the j-th label of the batch is one of point i's labels."""
  y = sp.csr_matrix(y)
  out = np.empty(points.shape + labels.shape[-1:], bool)
  # Batch by batch, rows then columns of the sparse matrix: an epoch of the full setting asks for
  # 184 x 1,600 x 1,600 pairs, too many for one fancy index.
  for batch in np.ndindex(points.shape[:-1]):
    out[batch] = y[points[batch]][:, labels[batch]].toarray() != 0
  return out


def triplet_margin_ohnm(pos_sim: jax.Array, sims: jax.Array, negative: jax.Array, margin: float,
                        k: int, tau: float = 0.1) -> jax.Array:
  """Official `TripletMarginLossOHNM` with `apply_softmax`: pos_sim (B,), sims (B, M) candidate
  similarities, negative (B, M) which candidates may serve as negatives; the k hardest of them."""
  k = min(k, sims.shape[-1])
  masked = jnp.where(negative, sims, -10.0)  # the official fill: never among the top k if negatives exist
  sim_n, _ = jax.lax.top_k(masked, k)
  loss = jnp.maximum(0.0, sim_n - pos_sim[:, None] + margin)
  # Softmax over the violators' similarities (non-violators enter with logit 0, as in the official code).
  weights = jax.nn.softmax(jnp.where(loss > 0, sim_n, 0.0) / tau, axis=-1)
  return jnp.mean(loss * weights)  # the weights are not detached, as in the official code


def hardest_negative(sims: jax.Array, negative: jax.Array) -> jax.Array:
  """Per row, the similarity of the most similar negative (-1 where a row has none)."""
  return jnp.max(jnp.where(negative, sims, -1.0), axis=-1)


def init_state(params, tx: optax.GradientTransformation, seed: int, num_points: int) -> Dict[str, Any]:
  """Stage 1's state, one pytree that a checkpoint holds whole: the step, parameters, optimizer state,
  dropout key, and each training point's current cluster (its own at first: random batches)."""
  return {"step": jnp.zeros([], jnp.int32), "params": params, "opt_state": tx.init(params),
          "key": jax.random.key_data(jax.random.key(seed)),
          "cluster_of": jnp.arange(num_points, dtype=jnp.int32)}


def make_update(encode: Callable[[Any, Any, Any], jax.Array], tx: optax.GradientTransformation,
                margin: float, num_negatives: int, tau: float = 0.1):
  """A jitted Siamese step `update(state, batches, i, point_inputs, label_inputs)` on batch `i` of an
  epoch's `batches` = (points, labels, targets): (steps, B) point and positive-label indices and their
  (steps, B, B) targets, kept on the device for the epoch (at CPU scale a transfer per step costs more
  than the step). Inputs are arrays or tuples of arrays (token ids and attention masks) indexed by their
  first axis; `encode(params, inputs, key) -> unit embeddings`, `key` a PRNG key for dropout (a fresh one
  per step and side, from the state's key and step). Returns (state, {'loss', 'hardness'}), hardness
  the mean similarity of each point's hardest in-batch negative label."""

  def loss_fn(params, point_inputs, label_inputs, points, labels, targets, key):
    take = lambda inputs, idx: jax.tree.map(lambda a: a[idx], inputs)
    doc_key, label_key = jax.random.split(key)
    docs = encode(params, take(point_inputs, points), doc_key)
    lbls = encode(params, take(label_inputs, labels), label_key)
    sims = docs @ lbls.T
    loss = triplet_margin_ohnm(jnp.diagonal(sims), sims, ~targets, margin, num_negatives, tau)
    return loss, jnp.mean(hardest_negative(sims, ~targets))

  @jax.jit  # not donated: a fresh state holds the caller's initial parameters
  def update(state, batches, i, point_inputs, label_inputs):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    (loss, hard), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], point_inputs, label_inputs, *(a[i] for a in batches), key)
    new, grad_norm = apply_gradients(state, grads, loss, tx, finish=lambda new: {**new, "step": new["step"] + 1})
    return new, {"loss": loss, "hardness": hard, "grad_norm": grad_norm}

  return update


def stage_one_step(update: Callable, embed: Callable, y: sp.csr_matrix, *, seed: int, batch_size: int,
                   curriculum: Sequence[int], refresh_every: int, clustered: bool) -> Callable:
  """`step(state, index, point_inputs, label_inputs)` for `loop.run_steps` fed batch indices 0, 1, ...:
  NGAME's batching (`clustered`) or random batches, then `update`. At the first batch of a refresh epoch
  the points are re-clustered on their current embeddings (`embed(params, point_inputs)`, clustering
  seeded by (seed, epoch)) and the assignment enters the state; an epoch's batches and positives come
  from an rng seeded by (seed, epoch). So the batch at `index` is a function of the seed, the index and
  the checkpointed clusters, and a resumed run repeats the uninterrupted one. One step function per run:
  it keeps the current epoch's batches."""
  steps_per_epoch = y.shape[0] // batch_size
  plan: Dict[str, Any] = {}

  def step(state, index: int, point_inputs, label_inputs):
    epoch, i = divmod(index, steps_per_epoch)
    if clustered and i == 0 and refresh_due(epoch, curriculum, refresh_every):
      embeddings = np.asarray(embed(state["params"], point_inputs))
      clusters = balanced_clusters(embeddings, cluster_size_at(epoch, curriculum),
                                   np.random.default_rng([seed, epoch, 1]))
      # Laid out as before: a differently placed argument would compile the update again.
      state = {**state, "cluster_of": jax.device_put(cluster_ids(clusters), state["cluster_of"].sharding)}
    if plan.get("epoch") != epoch:
      rng = np.random.default_rng([seed, epoch, 0])
      points = epoch_batches(np.asarray(state["cluster_of"]), batch_size, rng)
      labels = sample_positives(y, points, rng)
      plan.update(epoch=epoch, batches=jax.device_put((points, labels, batch_targets(y, points, labels))))
    return update(state, plan["batches"], i, point_inputs, label_inputs)

  return step
