"""DAGNN (Liu, Gao and Ji, "Towards Deeper Graph Neural Networks", KDD 2020), paper 22 of the zoo.

Claim reproduced (Sec. 3 and 5.3, Fig. 2 and 5): a coupled GCN's accuracy collapses as layers are
stacked (over-smoothing plus the difficulty of training deep transformations), while DAGNN, which
transforms once (Z = MLP(X)) and then propagates K hops without parameters, weighing the hops with
learned retainment scores, keeps its accuracy to K = 50-100 hops; the smoothness metric SMV of the
propagated features Â^l X falls towards 0 with l.

    python -m experiments.dagnn --config=runlocal --workdir=workdirs/dagnn

CPU setting (`runlocal`, generated data): networkx's planted partition graph, 4 groups x 50 nodes,
p_in 0.1, p_out 0.003, 32-dim features = 0.5 x a random class centroid + N(0, 1) noise, each row
L2-normalised (Planetoid features are row-normalised too); 5 labelled nodes per class, 10 per class
for validation (unused: fixed steps), the other 160 test. GCN at depth 2, 8, 32 and DAGNN at
K = 50, 100 (hidden 64, dropout 0.5, Adam lr 0.01, L2 5e-3, 300 full-batch steps), one seed.
Returns test accuracies `gcn/depth{L}`, `dagnn/k{K}` and `smv/hop{l}`; plots them to
WORKDIR/dagnn_depth.png. Measured here (27 s of CPU on 2 shared cores, mostly the 5 compiles):
GCN 1.000 / 0.250 / 0.250 test accuracy at depth 2 / 8 / 32 (chance 0.25); DAGNN 1.000 / 1.000 at
K = 50 / 100; SMV of Â^l X 0.688 / 0.589 / 0.453 / 0.140 / 0.049 / 0.003 at l = 0 / 2 / 8 / 32 /
50 / 100. On this graph DAGNN's K = 50-100 needs the sparse between-group edges (p_out 0.003);
at p_out 0.01 the graph mixes faster and 300 steps gave 0.71 / 0.79 at K = 50 / 100 (the sum of
many over-smoothed hops starts with large logits that the retainment scores must learn to damp).

Full setting (`--config=cora|citeseer|pubmed`, default cora): the public Planetoid split (20 labels
per class, 500 val, 1000 test) from the `ind.<name>.*` files in `--config.data_dir` (no download),
features row-normalised, the official run.sh hyper-parameters (mengliu1998/DeeperGNN): lr 0.01,
hidden 64, 1000 epochs; Cora K 10, weight decay 0.005, dropout 0.8; CiteSeer K 10, 0.02, 0.5;
PubMed K 20, 0.005, 0.8 (paper: 84.4 / 73.3 / 80.5 test accuracy, mean of 100 runs; the official
code also early-stops on the validation loss, which `fit` does not do).
"""
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from inception_zoo.errors import UserError
from inception_zoo.graph import data as graph_data
from inception_zoo.graph.propagate import normalized_adjacency, propagate_steps, smoothness
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter
from inception_zoo.models.dagnn import DAGNN, DeepGCN
from inception_zoo.train import node_classification
from inception_zoo.utils import plots

# The official run.sh: (K, weight decay, dropout) per Planetoid dataset.
PLANETOID = {"cora": (10, 0.005, 0.8), "citeseer": (10, 0.02, 0.5), "pubmed": (20, 0.005, 0.8)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.hidden = 64
  c.lr = 0.01
  c.total_steps = 1000
  c.log_every = 100
  if arg == "runlocal":
    c.name = "dagnn"
    c.data = "planted_partition"
    c.data_dir = ""
    c.graph = ml_collections.ConfigDict(dict(num_groups=4, group_size=50, p_in=0.1, p_out=0.003, feature_dim=32,
                                             signal=0.5, train_per_class=5, val_per_class=10))
    c.gcn_depths = (2, 8, 32)
    c.dagnn_ks = (50, 100)
    c.weight_decay = 5e-3
    c.dropout = 0.5
    c.total_steps = 300
    c.log_every = 300
    return c
  arg = "cora" if arg is None else arg
  if arg not in PLANETOID:
    raise UserError(f"unknown setting '{arg}' (runlocal, {', '.join(PLANETOID)}; default cora)")
  k, wd, dropout = PLANETOID[arg]
  c.name = f"dagnn_{arg}"
  c.data = arg
  c.data_dir = "data/planetoid"
  c.gcn_depths = ()
  c.dagnn_ks = (k,)
  c.weight_decay = wd
  c.dropout = dropout
  return c


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
