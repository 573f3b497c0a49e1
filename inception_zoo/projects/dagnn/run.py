"""dagnn's experiment driver (README.md; the recipes are experiments/dagnn.py)."""
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception_zoo.graph import data as graph_data
from inception_zoo.graph.propagate import normalized_adjacency, propagate_steps, smoothness
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.dagnn.dagnn import DAGNN, DeepGCN
from inception_zoo.train import node_classification
from inception_zoo.utils import plots


# The official run.sh: (K, weight decay, dropout) per Planetoid dataset.
PLANETOID = {"cora": (10, 0.005, 0.8), "citeseer": (10, 0.02, 0.5), "pubmed": (20, 0.005, 0.8)}


def load(config) -> graph_data.NodeData:
  if config.data == "planted_partition":
    d = graph_data.planted_partition(**config.graph.to_dict(), seed=config.seed)
    features = d.features / np.linalg.norm(d.features, axis=1, keepdims=True)
    return graph_data.NodeData(features, d.labels, d.edges, d.num_classes, d.train, d.val, d.test)
  return graph_data.load_planetoid(config.data_dir, config.data)


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  d = load(config)
  adj = normalized_adjacency(d.edges, d.num_nodes)
  x, labels = jnp.asarray(d.features), jnp.asarray(d.labels)
  objective = node_classification.supervised(labels, jnp.asarray(d.train))
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  models = {f"gcn/depth{n}": DeepGCN(d.num_classes, depth=n, hidden=config.hidden, dropout=config.dropout)
            for n in config.gcn_depths}
  models.update({f"dagnn/k{k}": DAGNN(d.num_classes, k=k, hidden=config.hidden, dropout=config.dropout)
                 for k in config.dagnn_ks})
  result: Dict[str, float] = {}
  for i, (name, model) in enumerate(models.items()):
    # Jitted init and inference: one compile each instead of op-by-op dispatch.
    params = jax.jit(model.init)(jax.random.key(config.seed + i), x, adj)["params"]
    apply = lambda p, key, model=model: model.apply({"params": p}, x, adj, train=True, rngs={"dropout": key})
    params, _ = node_classification.train(
        apply, params, objective, steps=config.total_steps, lr=config.lr, weight_decay=config.weight_decay,
        key=jax.random.key(config.seed + 100 + i), writer=writer, prefix=f"{name}/train/",
        log_every=config.log_every)
    logits = jax.jit(model.apply)({"params": params}, x, adj)
    for split in ("val", "test"):
      result[f"{name}/{split}"] = node_classification.accuracy(logits, labels, jnp.asarray(getattr(d, split)))
    result[name] = result[f"{name}/test"]
  if d.num_nodes <= 5000:  # SMV is quadratic in the node count
    hops = sorted({0, *config.gcn_depths, *config.dagnn_ks})
    smoothed = propagate_steps(x, adj, max(hops))
    result.update({f"smv/hop{h}": float(smoothness(smoothed[h])) for h in hops})
  writer.write(config.total_steps, {k: v for k, v in result.items()})
  writer.close()
  if config.gcn_depths:
    plot(config, result, f"{workdir}/dagnn_depth.png")
  return result


def plot(config, result: Dict[str, float], path: str):
  plt = plots.pyplot()
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
  ax.plot(config.gcn_depths, [result[f"gcn/depth{n}"] for n in config.gcn_depths], "o-", label="GCN (layers)")
  ax.plot(config.dagnn_ks, [result[f"dagnn/k{k}"] for k in config.dagnn_ks], "s-", label="DAGNN (hops K)")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("depth: GCN layers / DAGNN hops")
  ax.set_ylabel("test accuracy")
  ax.set_ylim(0, 1)
  ax.legend()
  hops = sorted(int(k.split("hop")[1]) for k in result if k.startswith("smv/"))
  ax2.plot([max(h, 0.5) for h in hops], [result[f"smv/hop{h}"] for h in hops], "o-")
  ax2.set_xscale("log", base=2)
  ax2.set_xlabel("propagation hops l (0 plotted at 0.5)")
  ax2.set_ylabel("SMV of Â^l X")
  plots.save(fig, path)
