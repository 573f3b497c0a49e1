"""federated_recon's experiment driver (README.md; the recipes are experiments/federated_recon.py)."""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from sklearn.neighbors import NearestCentroid

from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.main import require_cpu_data
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.federated_recon import federated, protonet
from inception_zoo.train.fullbatch import fit
from inception_zoo.train.state import calibrate_batch_stats
from inception_zoo.utils import plots


def _digits(split: str, upsample: int):
  x, y = datasets.digits_arrays(split, flat=False)
  return jnp.asarray(x.repeat(upsample, axis=1).repeat(upsample, axis=2)), y


def _embedding(config):
  if config.embedding == "conv4":
    return protonet.Conv4(width=config.width)
  if config.embedding == "mlp":
    return protonet.MLPEmbedding(width=config.width)
  raise UserError(f"unknown embedding '{config.embedding}' (conv4, mlp)")


def _calibrate(model, variables, x):
  """Conv-4's BN statistics := those of its training data; nothing to do without BN."""
  if "batch_stats" not in variables:
    return variables
  if isinstance(model, protonet.SoftmaxClassifier):
    emb = calibrate_batch_stats(model.embedding, {"params": variables["params"]["embedding"],
                                         "batch_stats": variables["batch_stats"]["embedding"]}, x)
    return {**variables, "batch_stats": {"embedding": emb["batch_stats"]}}
  return calibrate_batch_stats(model, variables, x)


def _fit(model, variables, batch_loss, config, steps, writer, prefix, key):
  """`fit` on the params; BN (Conv-4) normalises with each batch's statistics (train mode)."""
  def loss_fn(params, k):
    def forward(x):
      if "batch_stats" not in variables:
        return model.apply({"params": params}, x, train=True)
      out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                           mutable=["batch_stats"])
      return out
    return batch_loss(forward, k)
  params, _ = fit(loss_fn, variables["params"], optax.adam(config.learning_rate), steps, key=key,
                  has_aux=True, log_every=config.log_every, writer=writer, prefix=prefix)
  return {**variables, "params": params}


def _softmax_phase(model, variables, x, y, config, steps, writer, prefix, key):
  """Cross-entropy on random minibatches of (x, y), then BN statistics of x."""
  y = jnp.asarray(y)

  def batch_loss(forward, k):
    idx = jax.random.choice(k, len(y), (config.batch_size,), replace=False)
    logits = forward(x[idx])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y[idx]).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y[idx])}

  variables = _fit(model, variables, batch_loss, config, steps, writer, prefix, key)
  return _calibrate(model, variables, x)


def _accuracies(pred, y, config, prefix) -> Dict[str, float]:
  old, new = np.isin(y, config.base_classes), np.isin(y, config.new_classes)
  correct = pred == y
  return {f"{prefix}/old": float(correct[old].mean()), f"{prefix}/new": float(correct[new].mean()),
          f"{prefix}/all": float(correct[old | new].mean())}


def client_streams(y, config, rng):
  """Each new-class example goes to one random client among those holding its class."""
  owner = np.full(len(y), -1)
  for i in np.flatnonzero(np.isin(y, config.new_classes)):
    holders = [c for c, cls in enumerate(config.client_classes) if y[i] in cls]
    owner[i] = rng.choice(holders)
  return [np.flatnonzero(owner == c) for c in range(len(config.client_classes))]


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  require_cpu_data(config, "digits")
  x_train, y_train = _digits("train", config.upsample)
  x_test, y_test = _digits("test", config.upsample)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  key = jax.random.key(config.seed)
  k_init, k_proto, k_soft, k_fine, k_replay = jax.random.split(key, 5)
  num_classes = len(config.base_classes) + len(config.new_classes)
  base = np.isin(y_train, config.base_classes)
  x_base, y_base = x_train[base], y_train[base]
  result: Dict[str, float] = {}

  # 1. The embedding trained episodically on the base classes, then frozen.
  model = _embedding(config)
  variables = model.init(k_init, x_train[:2])
  table = protonet.class_index_table(y_base, config.base_classes)  # indices into x_base

  def episode_loss(forward, k):
    support, query = protonet.sample_episode(k, table, config.n_way, config.k_shot, config.n_query)
    emb = forward(x_base[jnp.concatenate([support, query])])
    return protonet.prototypical_loss(emb[:len(support)], emb[len(support):], config.n_way)[0], {}

  variables = _fit(model, variables, episode_loss, config, config.total_steps, writer, "protonet/train/",
                   k_proto)
  variables = _calibrate(model, variables, x_base)
  embed = jax.jit(lambda x: model.apply(variables, x))
  e_train, e_test = np.asarray(embed(x_train), np.float64), np.asarray(embed(x_test), np.float64)

  # 2. Server: base prototypes; clients: running means of their new-class streams; merge.
  server = federated.update(federated.PrototypeMemory.empty(num_classes, e_train.shape[1]),
                            e_train[base], y_base)
  result.update(_accuracies(federated.predict(server, e_test), y_test, config, "protonet_base_only"))
  rng = np.random.default_rng(config.seed)
  clients = []
  for stream in client_streams(y_train, config, rng):
    memory = federated.PrototypeMemory.empty(num_classes, e_train.shape[1])
    for start in range(0, len(stream), config.client_batch):
      batch = stream[start:start + config.client_batch]
      memory = federated.update(memory, e_train[batch], y_train[batch])
    clients.append(memory)
  merged = federated.merge([server, *clients])

  # 3. Centralised reference: centroids of all the pooled embeddings, and sklearn's NearestCentroid.
  pooled = np.stack([e_train[y_train == c].mean(0) for c in range(num_classes)])
  result["merge/max_abs_error"] = float(np.abs(merged.means - pooled).max())
  centroid = NearestCentroid().fit(e_train, y_train)
  pred_merged = federated.predict(merged, e_test)
  pred_central = centroid.predict(e_test)
  result["merge/prediction_mismatches"] = float(np.sum(pred_merged != pred_central))
  result["merge/communicated_floats"] = float(sum(m.seen.size * (e_train.shape[1] + 1) for m in clients))
  result.update(_accuracies(pred_merged, y_test, config, "protonet_merged"))
  result.update(_accuracies(pred_central, y_test, config, "protonet_centralised"))
  if result["merge/max_abs_error"] > 1e-6 or result["merge/prediction_mismatches"]:
    raise AssertionError(f"merged prototypes differ from the centralised ones: {result}")

  # 4. Baselines: a softmax Conv-4 trained on the base classes, then fine-tuned on the new classes
  # (without / with a replay buffer of base-class examples).
  soft = protonet.SoftmaxClassifier(_embedding(config), num_classes)
  soft_vars = _softmax_phase(soft, soft.init(k_init, x_train[:2]), x_base, y_base, config,
                             config.total_steps, writer, "softmax/train/", k_soft)
  predict_soft = lambda v: np.asarray(jnp.argmax(soft.apply(v, x_test), -1))
  result.update(_accuracies(predict_soft(soft_vars), y_test, config, "softmax_base_only"))
  new = np.isin(y_train, config.new_classes)
  replay = np.concatenate([np.flatnonzero(y_train == c)[:config.replay_per_class] for c in config.base_classes])
  for name, idx, k in (("finetune", np.flatnonzero(new), k_fine),
                       ("replay", np.concatenate([np.flatnonzero(new), replay]), k_replay)):
    v = _softmax_phase(soft, soft_vars, x_train[idx], y_train[idx], config, config.finetune_steps, writer,
                       f"{name}/train/", k)
    result.update(_accuracies(predict_soft(v), y_test, config, name))
  writer.write(config.total_steps, result)
  writer.close()
  plot(result, os.path.join(workdir, "federated_recon.png"))
  return result


def plot(result: Dict[str, float], path: str):
  plt = plots.pyplot()
  methods = [("protonet_merged", "ProtoNet, merged"), ("protonet_centralised", "ProtoNet, centralised"),
             ("finetune", "softmax fine-tuned"), ("replay", "softmax + replay")]
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for i, part in enumerate(("old", "new", "all")):
    ax.bar(np.arange(len(methods)) + (i - 1) * 0.27, [result[f"{m}/{part}"] for m, _ in methods], 0.27,
           label=f"{part} classes")
  ax.set_xticks(np.arange(len(methods)), [label for _, label in methods], fontsize=8)
  ax.set_ylabel("test accuracy (digits)")
  ax.set_ylim(0, 1)
  ax.legend(fontsize=8)
  plots.save(fig, path)
