"""Federated reconnaissance (Hendryx, KC, Walls, Morrison, "Federated Reconnaissance: Efficient,
Distributed, Class-Incremental Learning", arXiv 2109.00150, 2021), paper 29 of the zoo, on digits.

Claims reproduced (Sec. 4-5): (1) merging the clients' running-mean prototypes by counts gives exactly
the centralised prototypes, hence the centralised accuracy, with no gradient step (asserted: merged
means = pooled centroids to 1e-6, and predictions = scikit-learn's NearestCentroid on the frozen
embeddings); (2) the prototypical network does not forget the base classes while a softmax network
fine-tuned on the new classes does (asserted in the claim test), and a replay-buffer continual learner
sits in between. Plot of old / new / all-class accuracy per method in WORKDIR/federated_recon.png.
  python -m experiments.federated_recon --config=runlocal --workdir=workdirs/federated_recon
CPU time here: 14 s of CPU (20-45 s wall on 2 shared cores). Measured on the 360 held-out digits
(old = classes 0-4, new = 5-9), accuracy old / new / all: ProtoNet merged 0.961 / 0.783 / 0.872, equal
to centralised (merge error 4e-16, no prediction differing from NearestCentroid; 0.994 on old before
the new classes); softmax fine-tuned 0.000 / 0.956 / 0.478 (0.983 on old before); with replay
0.606 / 0.922 / 0.764. The clients send 520 floats (8 class prototypes of 64 + their counts).

CPU setting (`runlocal`): scikit-learn's 8x8 digits (sklearn load_digits through
`inception_zoo.data.datasets.digits`: 1,437 train / 360 test), pixels in [0, 1]. The embedding is an
MLP (64 -> 128 -> 64, `protonet.MLPEmbedding`), not Conv-4: Conv-4's train step takes 0.2-0.6 s of CPU
per 50-image episode here (16x16 upsampled digits, widths 32-64), too slow for the CPU budget; Conv-4
is the library's and the full setting's network, its size checked in the tests. The embedding is
trained episodically (5-way 5-shot 5-query, Adam 1e-3, 200 episodes) on classes 0-4 through
`inception_zoo.train.fullbatch.fit`, then frozen; classes 5-9 are learned by 3 clients holding
overlapping class subsets ({5,6,7}, {7,8,9}, {9,5}) who stream their examples in batches of 16 into
running means; the server merges them with its own base prototypes. Baselines, the same embedding
with a 10-way softmax head trained on 0-4 (200 steps of batch 50): fine-tuned 100 steps on all the
new-class data (the clients' data pooled: the baseline's best case), and fine-tuned with a replay
buffer of 10 stored examples per base class.

Full setting (config only here: `--config=omniglot` / `--config=mini_imagenet`): Conv-4 at width 64
on 28x28 Omniglot (loader `inception_zoo.proto.federated.omniglot`, TFDS) or 84x84 mini-ImageNet
(`federated.mini_imagenet`, a directory), base training on the background classes, then 600 Omniglot
/ 20 mini-ImageNet new classes arriving at clients; the paper reports the prototypical network over
22 / 33 points above state-of-the-art continual learners there.
"""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from sklearn.neighbors import NearestCentroid

from experiments import common
from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter
from inception_zoo.proto import federated, protonet
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="federated_recon_digits", data="digits", data_dir="", seed=0, embedding="mlp", width=128,
      upsample=1,
      base_classes=(0, 1, 2, 3, 4), new_classes=(5, 6, 7, 8, 9),
      client_classes=((5, 6, 7), (7, 8, 9), (9, 5)), client_batch=16,
      n_way=5, k_shot=5, n_query=5, learning_rate=1e-3, total_steps=200, log_every=100,
      batch_size=50, finetune_steps=100, replay_per_class=10))
  if arg == "runlocal":
    return c
  if arg not in (None, "omniglot", "mini_imagenet"):
    raise UserError(f"unknown setting '{arg}' (runlocal, omniglot = the default, mini_imagenet)")
  c.update(embedding="conv4", width=64)
  if arg == "mini_imagenet":
    c.update(name="federated_recon_mini_imagenet", data="mini_imagenet", upsample=1,
             base_classes=tuple(range(64)), new_classes=tuple(range(64, 84)), total_steps=40_000)
  else:
    c.update(name="federated_recon_omniglot", data="omniglot", upsample=1, n_way=60, k_shot=1,
             base_classes=tuple(range(964)), new_classes=tuple(range(964, 1564)), total_steps=40_000)
  c.client_classes = ()
  return c


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
    emb = protonet.calibrate_batch_stats(model.embedding, {"params": variables["params"]["embedding"],
                                         "batch_stats": variables["batch_stats"]["embedding"]}, x)
    return {**variables, "batch_stats": {"embedding": emb["batch_stats"]}}
  return protonet.calibrate_batch_stats(model, variables, x)


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
  common.require_cpu_data(config, "digits")
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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
