"""ngame's experiment driver (README.md; the recipes are experiments/ngame.py)."""
import itertools
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter, read_metrics
from inception_zoo.projects.ngame import batching, classifier, data, encoder, metrics, tokenize
from inception_zoo.train import loop
from inception_zoo.train.fullbatch import fit
from inception_zoo.train.optim import make_optimizer, make_schedule
from inception_zoo.utils import plots

# The paper's LF datasets with the official first-stage settings (Extreme-classification/ngame,
# configs/NGAME/*.json): training points; propensity A, B; batch size; title/text tokens; epochs;
# cluster-size curriculum; hard negatives per point.
_CURRICULUM = (10, 25, 50, 75, 100, 125, 150, 200)


_TITLES_CURRICULUM = (10, 20, 25, 50, 75, 100, 125, 150, 200)


LF_DATASETS = {
    "amazontitles131k": dict(data="LF-AmazonTitles-131K", train=294_805, a=0.6, b=2.6, batch=1600, tokens=32,
                             epochs=300, curriculum=_TITLES_CURRICULUM, negatives=10),
    "amazon131k": dict(data="LF-Amazon-131K", train=294_805, a=0.6, b=2.6, batch=350, tokens=128, epochs=300,
                       curriculum=_CURRICULUM, negatives=10),
    "wikiseealso320k": dict(data="LF-WikiSeeAlso-320K", train=693_082, a=0.55, b=1.5, batch=350, tokens=128,
                            epochs=300, curriculum=_CURRICULUM, negatives=10),
    "wikipedia500k": dict(data="LF-Wikipedia-500K", train=1_813_391, a=0.5, b=0.4, batch=256, tokens=256,
                          epochs=40, curriculum=(5, 10, 15, 20, 25, 30, 35), negatives=5),
    "amazontitles1.3m": dict(data="LF-AmazonTitles-1.3M", train=2_248_619, a=0.6, b=2.6, batch=1600, tokens=32,
                             epochs=300, curriculum=_TITLES_CURRICULUM, negatives=10)}


BATCHINGS = ("random", "ngame")


def stage_one(config, d, params, embed, update, tx, batching_name: str, seed: int, workdir: str, desc: str):
  """Trains the Siamese encoder from `params` with `batching_name` batches on `loop.run_steps` (one step per
  mini-batch), checkpointing in `workdir` and resuming from its newest checkpoint; returns (params, curves
  per epoch read back from the run's metrics)."""
  n = d["y_train"].shape[0]
  steps_per_epoch = n // config.batch_size
  step = batching.stage_one_step(update, embed, d["y_train"], seed=seed, batch_size=config.batch_size,
                                 curriculum=config.curriculum, refresh_every=config.refresh_every,
                                 clustered=batching_name == "ngame")

  def evaluate(state):
    ranked, _ = classifier.shortlist(embed(state["params"], d["x_test"]), embed(state["params"], d["label_x"]), 1,
                                     exclude=d.get("filter"))
    return {"test/P@1": metrics.precision_at_k(ranked, d["y_test"], 1)}

  setting = dict(seed=seed, batch_size=config.batch_size, curriculum=list(config.curriculum),
                 refresh_every=config.refresh_every)
  state, _ = loop.run_in_workdir(
      workdir, lambda: batching.init_state(params, tx, seed, n), step, itertools.count, config=config,
      total_steps=steps_per_epoch * config.num_epochs, settings=setting, evaluate=evaluate,
      log_every=steps_per_epoch, eval_every=config.eval_every * steps_per_epoch,
      checkpoint_every=config.checkpoint_every, keep=config.keep_checkpoints, desc=desc,
      extra=(jax.device_put(d["x_train"]), jax.device_put(d["label_x"])))
  return state["params"], _curves(workdir, steps_per_epoch)


def _curves(workdir: str, steps_per_epoch: int) -> Dict[str, list]:
  """Per-epoch train loss and hardness, and test P@1 at the evaluated epochs, from a run's metrics (rows a
  resumed run writes again replace the interrupted run's)."""
  rows: Dict[int, dict] = {}
  for row in read_metrics(workdir):
    rows.setdefault(row["step"], {}).update(row)
  train = [rows[s] for s in sorted(rows) if "train/loss" in rows[s]]
  evaluated = [s for s in sorted(rows) if "test/P@1" in rows[s]]
  return {"epoch": [s // steps_per_epoch for s in evaluated], "P@1": [rows[s]["test/P@1"] for s in evaluated],
          "loss": [r["train/loss"] for r in train], "hardness": [r["train/hardness"] for r in train]}


def _batch_hardness(docs, labels_emb, y, cluster_of, batch_size, rng) -> float:
  """Mean similarity of each point's hardest in-batch negative for batches cut from the clusters
  `cluster_of` (each point's cluster index)."""
  points = batching.epoch_batches(cluster_of, batch_size, rng)
  positives = batching.sample_positives(y, points, rng)
  sims = jnp.einsum("sid,sjd->sij", docs[points], labels_emb[positives])
  return float(jnp.mean(batching.hardest_negative(sims, ~batching.batch_targets(y, points, positives))))


def _stage_two(config, d, docs, labels_emb, test_docs, seed: int):
  """Classifiers from the label embeddings, trained against each point's shortlist; fused ranking."""
  c = config.classifier
  idx, _ = classifier.shortlist(docs, labels_emb, c.shortlist)
  negative = ~batching.is_label(d["y_train"], np.arange(len(idx))[:, None], idx)
  positives, counts = classifier.padded_positives(d["y_train"])
  loss_fn = classifier.classifier_loss(docs, jnp.asarray(positives), jnp.asarray(counts), jnp.asarray(idx),
                                       jnp.asarray(negative), c.margin, c.num_negatives, c.batch_size)
  w, _ = fit(loss_fn, labels_emb, optax.adam(c.learning_rate), c.steps, key=jax.random.key(seed),
             log_every=min(c.steps, 1000))
  ranked, _ = classifier.fused_ranking(test_docs, labels_emb, w, config.eval_shortlist, c.beta,
                                       exclude=d.get("filter"))
  return ranked


def _retrieval_metrics(config, d, docs, labels_emb, test_docs, inv_prop, seed: int, stage_two: bool):
  """Metrics of the embeddings' top 5 (`knn/`) and, with `stage_two`, of the fused ranking (`fused/`)."""
  ranked, _ = classifier.shortlist(test_docs, labels_emb, 5, exclude=d.get("filter"))
  r = {f"knn/{k}": v for k, v in metrics.xc_metrics(ranked, d["y_test"], inv_prop).items()}
  if stage_two:
    fused = _stage_two(config, d, docs, labels_emb, test_docs, seed)
    r.update({f"fused/{k}": v for k, v in metrics.xc_metrics(fused[:, :5], d["y_test"], inv_prop).items()})
  return r


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  if config.data == "synthetic":
    return _run_synthetic(config, workdir)
  return _run_lf(config, workdir)


def synthetic_trainer(config: ml_collections.ConfigDict):
  """(MLP encoder, optimizer, jitted embed(params, x), stage-1 update) of the synthetic setting: one compiled
  step for every seed and batching (same shapes, the data enters as arguments)."""
  model = encoder.MLPEncoder(hidden=config.encoder.hidden, dim=config.encoder.dim)
  steps_per_epoch = config.synthetic.num_train // config.batch_size
  tx = make_optimizer(config, make_schedule(config, steps_per_epoch, steps_per_epoch * config.num_epochs))
  encode = lambda params, x, key=None: model.apply({"params": params}, x)[0]
  update = batching.make_update(encode, tx, config.margin, config.num_negatives, config.tau)
  return model, tx, jax.jit(encode), update


def _run_synthetic(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  if config.encoder.name != "mlp":
    raise UserError(f"the synthetic setting trains the MLP encoder, not '{config.encoder.name}'")
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  model, tx, embed, update = synthetic_trainer(config)
  per_seed = {b: [] for b in BATCHINGS}
  curves = {b: [] for b in BATCHINGS}
  for seed in config.seeds:
    d = data.synthetic_xc(seed=seed, **config.synthetic)
    inv_prop = metrics.inverse_propensity(d["y_train"], config.propensity_a, config.propensity_b)
    for name in BATCHINGS:
      init = model.init(jax.random.key(seed), d["x_train"][:1])["params"]
      params, curve = stage_one(config, d, init, embed, update, tx, name, seed,
                                 os.path.join(workdir, name, f"seed{seed}"), f"{name}/seed{seed}")
      curves[name].append(curve)
      docs, labels_emb, test_docs = (embed(params, d[k]) for k in ("x_train", "label_x", "x_test"))
      # Stage 2 on NGAME's encoder only (each run compiles its own classifier loss: not repeated for the
      # random-batch ablation).
      r = _retrieval_metrics(config, d, docs, labels_emb, test_docs, inv_prop, seed, stage_two=name == "ngame")
      r["hardness"] = float(np.mean(curve["hardness"][config.curriculum[0]:]))
      if name == "ngame":
        # At equal embeddings (this encoder's): clustered against random batches.
        rng = np.random.default_rng(seed)
        size = batching.cluster_size_at(config.num_epochs - 1, config.curriculum)
        clusters = batching.cluster_ids(batching.balanced_clusters(np.asarray(docs), size, rng))
        r["same_embeddings/clustered_hardness"] = _batch_hardness(docs, labels_emb, d["y_train"], clusters,
                                                                  config.batch_size, rng)
        r["same_embeddings/random_hardness"] = _batch_hardness(docs, labels_emb, d["y_train"], np.arange(len(docs)),
                                                               config.batch_size, rng)
      per_seed[name].append(r)
  result = {}
  for name in BATCHINGS:
    for k in per_seed[name][0]:
      values = [r[k] for r in per_seed[name]]
      result[f"{name}/{k}"] = float(np.mean(values))
      for seed, v in zip(config.seeds, values):
        result[f"{name}/seed{seed}/{k}"] = float(v)
  writer.write(config.num_epochs, result)
  writer.close()
  plot(curves, os.path.join(workdir, "ngame_batching.png"))
  return result


def _lf_data(config) -> Dict[str, object]:
  """An LF-* folder with its titles tokenised by the encoder's vocabulary; training points without labels
  are dropped (they bring no positive), the propensities use all of them (as pyxclib)."""
  raw = data.load_lf_dataset(config.data_dir)
  keep = np.flatnonzero(np.diff(raw["trn_labels"].indptr) > 0)
  vocab = os.path.join(config.encoder.pretrained, "vocab.txt")
  tok = lambda texts: tokenize.tokenize(texts, vocab, config.encoder.max_len, config.encoder.lowercase)
  return dict(x_train=tok([raw["trn_text"][i] for i in keep]), y_train=raw["trn_labels"][keep],
              x_test=tok(raw["tst_text"]), y_test=raw["tst_labels"], label_x=tok(raw["lbl_text"]),
              filter=raw["filter"],
              inv_prop=metrics.inverse_propensity(raw["trn_labels"], config.propensity_a, config.propensity_b))


def _in_chunks(embed, chunk: int):
  """embed(params, inputs) over the rows of `inputs` (a tuple of arrays), `chunk` rows per call (the last
  chunk padded: one compiled shape), for sets whose activations do not fit at once."""

  def run_all(params, inputs):
    inputs = tuple(np.asarray(a) for a in inputs)  # host slices: one compiled shape, whatever the rows
    n = len(inputs[0])
    size = min(chunk, n)
    parts = []
    for i in range(0, n, size):
      pad = max(0, i + size - n)
      part = tuple(np.pad(a[i:i + size], [(0, pad)] + [(0, 0)] * (a.ndim - 1)) for a in inputs)
      parts.append(embed(params, part)[:size - pad])
    return jnp.concatenate(parts)

  return run_all


def _run_lf(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  """The paper's setting: DistilBERT from pre-trained weights, trained end to end on the LF-* titles with
  NGAME's batches (stage 1), then the shortlist classifiers (stage 2); test metrics with the set's filter."""
  if config.encoder.name != "distilbert":
    raise UserError(f"the LF settings train the DistilBERT encoder, not '{config.encoder.name}'")
  d = _lf_data(config)
  model, params = encoder.load_distilbert(config.encoder.pretrained, config.encoder.pooling)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  steps_per_epoch = d["y_train"].shape[0] // config.batch_size
  tx = make_optimizer(config, make_schedule(config, steps_per_epoch, steps_per_epoch * config.num_epochs))

  def encode(params, inputs, key=None):  # a key: training, with dropout
    ids, mask = inputs
    return model.apply({"params": params}, ids, mask, train=key is not None,
                       rngs=None if key is None else {"dropout": key})[0]

  update = batching.make_update(encode, tx, config.margin, config.num_negatives, config.tau)
  embed = _in_chunks(jax.jit(encode), config.encoder.embed_batch)
  seed = config.seeds[0]
  params, curve = stage_one(config, d, params, embed, update, tx, "ngame", seed, os.path.join(workdir, "ngame"),
                             "ngame")
  docs, labels_emb, test_docs = (embed(params, d[k]) for k in ("x_train", "label_x", "x_test"))
  r = _retrieval_metrics(config, d, docs, labels_emb, test_docs, d["inv_prop"], seed, stage_two=True)
  result = {"ngame/train_loss": curve["loss"][-1], **{f"ngame/{k}": float(v) for k, v in r.items()}}
  writer.write(config.num_epochs, result)
  writer.close()
  return result


def plot(curves, path: str):
  plt = plots.pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
  for name, label in (("random", "random batches"), ("ngame", "NGAME (clustered) batches")):
    epochs = curves[name][0]["epoch"]
    ax1.plot(epochs, np.mean([c["P@1"] for c in curves[name]], 0), "o-", label=label)
    ax2.plot(np.arange(1, len(curves[name][0]["hardness"]) + 1),
             np.mean([c["hardness"] for c in curves[name]], 0), label=label)
  ax1.set_xlabel("epoch")
  ax1.set_ylabel("test P@1 (embedding retrieval)")
  ax2.set_xlabel("epoch")
  ax2.set_ylabel("similarity of hardest in-batch negative")
  ax1.legend()
  plots.save(fig, path)
