"""Node-classification data: generated graphs from networkx (karate club, planted partition with noisy
features) and the Planetoid citation graphs (Cora, CiteSeer, PubMed) read from their standard files.

Planetoid files (`ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}`, Yang et al. 2016, as distributed
with Kipf & Welling's GCN and PyTorch Geometric) are read from a directory: nothing is downloaded.
The split is the public one: the `y` rows train (20 per class), the next 500 nodes validate, the
`test.index` nodes test; CiteSeer's isolated test nodes missing from `tx` get zero features and
label 0, as in Kipf's and PyG's loaders.
"""
import dataclasses
import os
import pickle

import numpy as np

from inception_zoo.errors import UserError

PLANETOID = ("cora", "citeseer", "pubmed")


@dataclasses.dataclass(frozen=True)
class NodeData:
  """A graph with node features, labels and boolean train / val / test masks over its nodes."""
  features: np.ndarray  # [N, F] float32
  labels: np.ndarray  # [N] int32
  edges: np.ndarray  # [2, E] undirected, each edge once or in both directions
  num_classes: int
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray

  @property
  def num_nodes(self) -> int:
    return self.features.shape[0]


def split_per_class(labels: np.ndarray, train_per_class: int, val_per_class: int, seed: int = 0):
  """Masks (train, val, test): `train_per_class` then `val_per_class` random nodes of every class,
  the remaining nodes test (the few-label semi-supervised setting)."""
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  train = np.zeros(labels.shape, bool)
  val = np.zeros(labels.shape, bool)
  for c in np.unique(labels):
    nodes = rng.permutation(np.flatnonzero(labels == c))
    if len(nodes) <= train_per_class + val_per_class:
      raise UserError(f"class {c} has {len(nodes)} nodes, too few for {train_per_class} train + "
                      f"{val_per_class} val per class and a test set")
    train[nodes[:train_per_class]] = True
    val[nodes[train_per_class:train_per_class + val_per_class]] = True
  return train, val, ~(train | val)


def _from_networkx(graph, labels, features, train_per_class, val_per_class, seed) -> NodeData:
  edges = np.array(list(graph.edges()), np.int64).reshape(-1, 2).T
  train, val, test = split_per_class(labels, train_per_class, val_per_class, seed)
  return NodeData(features.astype(np.float32), np.asarray(labels, np.int32), edges,
                  int(np.max(labels)) + 1, train, val, test)


def karate_club(train_per_class: int = 2, val_per_class: int = 0, seed: int = 0) -> NodeData:
  """Zachary's karate club (34 nodes, 2 clubs as labels) with one-hot node features."""
  import networkx as nx
  g = nx.karate_club_graph()
  labels = np.array([g.nodes[i]["club"] != "Mr. Hi" for i in g.nodes], np.int32)
  return _from_networkx(g, labels, np.eye(g.number_of_nodes()), train_per_class, val_per_class, seed)


def planted_partition(num_groups: int = 4, group_size: int = 100, p_in: float = 0.05, p_out: float = 0.005,
                      feature_dim: int = 32, signal: float = 0.5, train_per_class: int = 2,
                      val_per_class: int = 10, seed: int = 0) -> NodeData:
  """networkx's planted partition graph (label = group) with noisy features: a random Gaussian centroid
  per group scaled by `signal`, plus standard normal noise in every dimension (low `signal`: the
  features alone classify poorly and the graph is needed)."""
  import networkx as nx
  if not 0 <= p_out <= 1 or not 0 <= p_in <= 1:
    raise UserError(f"p_in and p_out must be probabilities, got {p_in}, {p_out}")
  g = nx.planted_partition_graph(num_groups, group_size, p_in, p_out, seed=seed)
  labels = np.repeat(np.arange(num_groups), group_size)
  rng = np.random.default_rng(seed)
  centroids = rng.normal(size=(num_groups, feature_dim))
  features = signal * centroids[labels] + rng.normal(size=(len(labels), feature_dim))
  return _from_networkx(g, labels, features, train_per_class, val_per_class, seed)


def load_planetoid(root: str, name: str, normalize_features: bool = True) -> NodeData:
  """Cora / CiteSeer / PubMed from the `ind.<name>.*` files in `root`, with the public split;
  `normalize_features` divides each row by its sum (DAGNN's and PyG's NormalizeFeatures)."""
  import scipy.sparse as sp
  name = name.lower()
  if name not in PLANETOID:
    raise UserError(f"unknown Planetoid dataset '{name}' ({', '.join(PLANETOID)})")
  parts = {}
  for part in ("x", "tx", "allx", "y", "ty", "ally", "graph"):
    path = os.path.join(root, f"ind.{name}.{part}")
    if not os.path.exists(path):
      raise UserError(f"missing Planetoid file {path} (put the ind.{name}.* files in {root})")
    with open(path, "rb") as f:
      parts[part] = pickle.load(f, encoding="latin1")  # the files are Python 2 pickles
  with open(os.path.join(root, f"ind.{name}.test.index")) as f:
    test_index = np.array([int(line) for line in f if line.strip()])
  dense = lambda m: np.asarray(m.todense()) if sp.issparse(m) else np.asarray(m)
  tx, ty = dense(parts["tx"]), np.asarray(parts["ty"])
  sorted_test = np.sort(test_index)
  if name == "citeseer":  # some test nodes are isolated and missing from tx: zero rows for them
    full = np.arange(sorted_test[0], sorted_test[-1] + 1)
    tx_ext = np.zeros((len(full), tx.shape[1]), tx.dtype)
    ty_ext = np.zeros((len(full), ty.shape[1]), ty.dtype)
    tx_ext[sorted_test - sorted_test[0]], ty_ext[sorted_test - sorted_test[0]] = tx, ty
    tx, ty = tx_ext, ty_ext
  features = np.concatenate([dense(parts["allx"]), tx]).astype(np.float32)
  onehot = np.concatenate([np.asarray(parts["ally"]), ty])
  # The rows of tx are in test.index order; put them at their node ids.
  features[test_index], onehot[test_index] = features[sorted_test], onehot[sorted_test]
  if normalize_features:
    features /= np.maximum(features.sum(1, keepdims=True), 1e-12)
  n = features.shape[0]
  edges = np.array([(u, v) for u, nbrs in parts["graph"].items() for v in nbrs], np.int64).reshape(-1, 2).T
  masks = np.zeros((3, n), bool)
  num_train = len(parts["y"])
  masks[0, :num_train] = True
  masks[1, num_train:num_train + 500] = True
  masks[2, sorted_test] = True
  return NodeData(features, onehot.argmax(1).astype(np.int32), edges, onehot.shape[1], *masks)
