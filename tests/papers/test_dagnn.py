"""Paper 22 (DAGNN): the propagation against torch_geometric, the model against its formula, the
Planetoid reader on a generated file set, and the claim from the experiment's CPU setting."""
import pickle

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.nn import SGConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from experiments import dagnn as experiment
from inception_zoo.errors import UserError
from inception_zoo.graph import data
from inception_zoo.graph.propagate import normalized_adjacency, propagate_steps, smoothness
from inception_zoo.projects.dagnn.dagnn import DAGNN, DeepGCN


def _random_graph(n=30, m=60, seed=0):
  g = nx.gnm_random_graph(n, m, seed=seed)
  return np.array(g.edges()).T, np.random.default_rng(seed).normal(size=(n, 5)).astype(np.float32)


def _dense_adjacency(edges, n):
  a = np.zeros((n, n))
  a[edges[0], edges[1]] = a[edges[1], edges[0]] = 1
  np.fill_diagonal(a, 1)
  d = a.sum(1) ** -0.5
  return d[:, None] * a * d[None]


def test_propagation_matches_torch_geometric_sgconv():
  # SGConv(K) with an identity weight and no bias is Â^K X with PyG's gcn_norm (self-loops added).
  edges, x = _random_graph()
  k = 4
  conv = SGConv(5, 5, K=k, bias=False)
  with torch.no_grad():
    conv.lin.weight.copy_(torch.eye(5))
    both = torch.as_tensor(np.concatenate([edges, edges[::-1]], 1))
    expected = conv(torch.as_tensor(x), both).numpy()
    index, weight = gcn_norm(both, num_nodes=30, add_self_loops=True)
  adj = normalized_adjacency(edges, 30)  # each edge listed once: symmetrised inside
  np.testing.assert_allclose(propagate_steps(jnp.asarray(x), adj, k)[k], expected, atol=1e-5)
  ours = sp.coo_matrix((np.asarray(adj.weights), (adj.receivers, adj.senders)), (30, 30)).toarray()
  theirs = sp.coo_matrix((weight.numpy(), (index[1].numpy(), index[0].numpy())), (30, 30)).toarray()
  np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_adjacency_ignores_duplicates_and_self_loops_and_rejects_bad_ids():
  edges, _ = _random_graph()
  noisy = np.concatenate([edges, edges[::-1], [[3, 7], [3, 7]]], 1)  # both ways, two self-loops
  adj = normalized_adjacency(noisy, 30)
  dense = sp.coo_matrix((np.asarray(adj.weights), (adj.receivers, adj.senders)), (30, 30)).toarray()
  np.testing.assert_allclose(dense, _dense_adjacency(edges, 30), atol=1e-6)
  with pytest.raises(UserError, match="endpoints"):
    normalized_adjacency(np.array([[0], [30]]), 30)


def test_dagnn_is_its_formula():
  edges, x = _random_graph()
  model = DAGNN(num_classes=3, k=5, hidden=8)
  adj = normalized_adjacency(edges, 30)
  params = jax.jit(model.init)(jax.random.key(0), x, adj)["params"]
  out = jax.jit(model.apply)({"params": params}, x, adj)
  m, r = params["mlp"], params["retain"]
  z = np.maximum(x @ m["fc0"]["kernel"] + m["fc0"]["bias"], 0) @ m["fc1"]["kernel"] + m["fc1"]["bias"]
  a = _dense_adjacency(edges, 30)
  expected = 0
  for hop in range(6):
    h = np.linalg.matrix_power(a, hop) @ z
    expected = expected + 1 / (1 + np.exp(-(h @ r["kernel"] + r["bias"]))) * h
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
  # Parameters: the MLP plus the C + 1 of the retainment projection, whatever K.
  count = lambda p: sum(v.size for v in jax.tree.leaves(p))
  assert count(params) == (5 * 8 + 8) + (8 * 3 + 3) + (3 + 1)


def test_deep_gcn_stacks_its_layers():
  edges, x = _random_graph()
  adj = normalized_adjacency(edges, 30)
  params = jax.eval_shape(DeepGCN(num_classes=3, depth=6, hidden=8).init, jax.random.key(0), x, adj)["params"]
  assert params["middle"]["Dense_0"]["kernel"].shape == (4, 8, 8)  # depth - 2 scanned layers
  assert params["last"]["Dense_0"]["kernel"].shape == (8, 3)
  with pytest.raises(UserError, match="depth"):
    DeepGCN(num_classes=3, depth=0).init(jax.random.key(0), x, adj)


def test_smoothness_metric():
  x = np.random.default_rng(0).normal(size=(6, 4))
  u = x / np.linalg.norm(x, axis=1, keepdims=True)
  brute = np.mean([np.linalg.norm(u[i] - u[j]) / 2 for i in range(6) for j in range(6) if i != j])
  np.testing.assert_allclose(smoothness(jnp.asarray(x)), brute, rtol=1e-5)
  assert float(smoothness(jnp.ones((5, 3)) * jnp.arange(1.0, 6.0)[:, None])) < 1e-6  # all one direction


def test_generated_graphs_and_splits():
  karate = data.karate_club(train_per_class=2)
  assert karate.num_nodes == 34 and karate.edges.shape == (2, 78) and karate.num_classes == 2
  assert karate.train.sum() == 4 and not (karate.train & karate.test).any()
  pp = data.planted_partition(num_groups=3, group_size=20, train_per_class=2, val_per_class=3)
  assert pp.features.shape == (60, 32) and pp.train.sum() == 6 and pp.val.sum() == 9 and pp.test.sum() == 45
  with pytest.raises(UserError, match="too few"):
    data.split_per_class(np.zeros(5, int), 3, 3)


def _write_planetoid(root, name, missing_test_node=False):
  """A tiny Planetoid file set: 6 training-pool nodes (2 labelled), 3 test nodes with ids 6..8 listed
  out of order; CiteSeer-style, test node 7 can be absent from tx (isolated)."""
  rng = np.random.default_rng(0)
  onehot = lambda ids: np.eye(2)[ids]
  allx, ally = rng.random((6, 4)), onehot([0, 1, 0, 1, 1, 0])
  test_index = [8, 6] if missing_test_node else [8, 6, 7]
  tx, ty = rng.random((len(test_index), 4)), onehot([1, 0, 1][:len(test_index)])
  parts = {"x": sp.csr_matrix(allx[:2]), "y": ally[:2], "allx": sp.csr_matrix(allx), "ally": ally,
           "tx": sp.csr_matrix(tx), "ty": ty, "graph": {0: [1, 6], 1: [0], 2: [8], 6: [0], 8: [2]}}
  for part, value in parts.items():
    with open(root / f"ind.{name}.{part}", "wb") as f:
      pickle.dump(value, f)
  (root / f"ind.{name}.test.index").write_text("\n".join(map(str, test_index)) + "\n")
  return allx, tx


def test_planetoid_reader(tmp_path):
  allx, tx = _write_planetoid(tmp_path, "cora")
  d = data.load_planetoid(str(tmp_path), "cora", normalize_features=False)
  assert d.num_nodes == 9 and d.num_classes == 2
  np.testing.assert_allclose(d.features[8], tx[0], rtol=1e-6)  # tx rows follow test.index order
  np.testing.assert_allclose(d.features[6], tx[1], rtol=1e-6)
  np.testing.assert_allclose(d.features[:6], allx, rtol=1e-6)
  assert list(d.labels[6:]) == [0, 1, 1] and d.train.sum() == 2 and list(np.flatnonzero(d.test)) == [6, 7, 8]
  assert d.val.sum() == 7  # the 500 nodes after the labelled ones, clipped to this tiny graph
  normalized = data.load_planetoid(str(tmp_path), "cora")
  np.testing.assert_allclose(normalized.features.sum(1), 1, rtol=1e-5)
  _write_planetoid(tmp_path, "citeseer", missing_test_node=True)
  c = data.load_planetoid(str(tmp_path), "citeseer", normalize_features=False)
  assert c.num_nodes == 9 and not c.features[7].any()  # the isolated test node: zero features
  with pytest.raises(UserError, match="missing Planetoid file"):
    data.load_planetoid(str(tmp_path), "pubmed")


def test_settings():
  assert experiment.get_config("citeseer").dagnn_ks == (10,) and experiment.get_config().weight_decay == 0.005
  with pytest.raises(UserError, match="unknown setting"):
    experiment.get_config("karate")


def test_dagnn_holds_accuracy_where_deep_gcn_collapses(tmp_path):
  # Liu et al. 2020, Sec. 5.3 / Fig. 5: DAGNN keeps its accuracy to K = 100 hops while a GCN's falls
  # with depth, and propagation over-smooths (SMV of Â^l X -> 0). Planted partition graph, 200 nodes,
  # 5 labels per class, 160 test nodes (one node = 0.006). Measured: GCN 1.000 / 0.250 / 0.250 at
  # depth 2 / 8 / 32; DAGNN 1.000 / 1.000 at K = 50 / 100; SMV 0.688 -> 0.003 (hop 100).
  r = experiment.main(["--config=runlocal", f"--workdir={tmp_path}"])
  assert r["gcn/depth2"] > 0.9, r
  assert r["gcn/depth8"] < 0.5 and r["gcn/depth32"] < 0.5, r  # collapsed towards chance (0.25)
  assert min(r["dagnn/k50"], r["dagnn/k100"]) > r["gcn/depth2"] - 0.05, r  # held at 50-100 hops
  assert r["smv/hop0"] > 0.5 and r["smv/hop100"] < 0.05, r
  assert (tmp_path / "dagnn_depth.png").exists()
