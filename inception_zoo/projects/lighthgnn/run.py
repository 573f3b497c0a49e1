"""lighthgnn's experiment driver (README.md; the recipes are experiments/lighthgnn.py)."""
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections

from inception_zoo.graph.data import split_per_class
from inception_zoo.graph.hypergraph import hypergraph_sbm
from inception_zoo.metrics import MetricWriter
from inception_zoo.models.mlp import graph_mlp
from inception_zoo.projects.lighthgnn.hgnn import HGNN
from inception_zoo.train import node_classification as nc
from inception_zoo.utils import plots

METHODS = ("mlp", "hgnn", "lighthgnn", "lighthgnn_plus")


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  d = hypergraph_sbm(**config.hypergraph.to_dict(), seed=config.seed)
  hg = d.hypergraph()
  train, _, test = (jnp.asarray(m) for m in split_per_class(d.labels, config.train_per_class,
                                                             config.val_per_class, config.seed))
  x, labels = jnp.asarray(d.features), jnp.asarray(d.labels)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  keys = jax.random.split(jax.random.key(config.seed), 8)
  fit = lambda apply, params, objective, key, name: nc.train(
      apply, params, objective, steps=config.total_steps, lr=config.lr, weight_decay=config.weight_decay,
      key=key, writer=writer, prefix=f"{name}/train/", log_every=config.log_every)[0]

  teacher = HGNN(d.num_classes, **config.teacher.to_dict())
  t_params = fit(lambda p, k: teacher.apply({"params": p}, x, hg, train=True, rngs={"dropout": k}),
                 teacher.init(keys[0], x, hg)["params"], nc.supervised(labels, train), keys[1], "hgnn")
  teacher_fn = lambda features: teacher.apply({"params": t_params}, features, hg)
  teacher_logits = teacher_fn(x)
  reliability = nc.hyperedge_reliability(teacher_fn, x, hg, keys[2], config.noise_level)

  student = graph_mlp(num_classes=d.num_classes, **config.student.to_dict())
  s_init = student.init(keys[3], x)["params"]
  s_apply = lambda p, k: student.apply({"params": p}, x, train=True, rngs={"dropout": k})
  objectives = {
      "mlp": nc.supervised(labels, train),
      "lighthgnn": nc.distillation(teacher_logits, labels, train, lamb=config.lamb, tau=config.tau),
      "lighthgnn_plus": nc.distillation(teacher_logits, labels, train, lamb=config.lamb, tau=config.tau,
                                        hg=hg, reliability=reliability)}
  logits = {"hgnn": teacher_logits}
  for i, (name, objective) in enumerate(objectives.items()):
    params = fit(s_apply, s_init, objective, keys[4 + i], name)  # same init and dropout keys order
    logits[name] = student.apply({"params": params}, x)  # inference: features only
  result = {m: nc.accuracy(logits[m], labels, test) for m in METHODS}
  result["reliability/mean"] = float(jnp.mean(reliability))
  writer.write(config.total_steps, {f"test/{k}": v for k, v in result.items()})
  writer.close()
  plot(result, f"{workdir}/lighthgnn.png")
  return result


def plot(result: Dict[str, float], path: str):
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  labels = ["MLP", "HGNN\n(teacher)", "LightHGNN", "LightHGNN+"]
  bars = ax.bar(labels, [result[m] for m in METHODS], color=["gray", "tab:blue", "tab:orange", "tab:green"])
  ax.bar_label(bars, fmt="%.3f")
  ax.set_ylabel("test accuracy (hypergraph SBM)")
  ax.set_ylim(0, 1)
  plots.save(fig, path)
