"""NGAME (Dahiya, Gupta, Saini, Soni, Wang, Dave, Jiao, K, Dey, Singh, Hada, Jain, Paliwal, Mittal, Mehta,
Ramjee, Agarwal, Kar, Varma, "NGAME: Negative Mining-aware Mini-batching for Extreme Classification",
WSDM 2023), paper 6 of the zoo: negative-mining-aware mini-batching on a synthetic extreme-classification
set (CPU) and on the paper's LF-* product-title sets with DistilBERT (full setting).

Claim reproduced (Sec. 3-4): mini-batches made of clusters of points that are close in the current
embedding space give harder in-batch negatives than random mini-batches of the same size, at no mining
cost, and a Siamese encoder trained on them retrieves labels more precisely (P@1) than one trained on
random batches with the same steps, loss and batch size. The plot (WORKDIR/ngame_batching.png) shows
test P@1 and the in-batch negative hardness (similarity of each point's hardest in-batch negative
label) per epoch for both batchings.
  python -m experiments.ngame --config=runlocal --workdir=workdirs/ngame
CPU time here: 24 s of CPU (45 s wall on 2 shared cores).
Measured here, 2,000 test points, mean of 2 seeds (per seed in brackets): embedding retrieval P@1 0.656
(0.643 / 0.670) with NGAME batches against 0.624 (0.617 / 0.632) with random batches, P@5 0.269 / 0.261,
nDCG@5 0.701 / 0.681, PSP@5 0.643 / 0.631; hardest in-batch negative similarity, mean over the epochs from
the first clustering, 0.680 against 0.507, and at equal embeddings (NGAME's final encoder) 0.700 for
clustered against 0.488 for random batches. Stage 2 on NGAME's encoder: P@1 0.756, P@5 0.292, nDCG@5
0.762, PSP@5 0.668.

Stage 1 runs on the shared step loop (`train/loop.run_steps`, one step per mini-batch), in
WORKDIR/<batching>/seed<seed> (WORKDIR/ngame in the full setting): checkpoints every `checkpoint_every`
steps (the CPU runs only at their ends), at the end and on SIGTERM, a stop at the first non-finite loss,
and an exact resume (the state holds each point's cluster; an epoch's batches, positives and clustering
are seeded by (seed, epoch); `inception_zoo.xc.batching.stage_one_step`): the same command continues a
run, finished stage-1 runs are restored and not repeated. Stage 2 is short and is not checkpointed: a
resumed run redoes it from the final stage-1 encoder.

CPU setting (`runlocal`): `inception_zoo.xc.data.synthetic_xc`, 2,000 labels in 100 groups of 20
(Gaussian centroids: a group centroid plus a per-label offset of 0.35 its norm, so siblings are the
hard negatives), 4,096 train / 2,000 test points with a Zipf-popular primary label and Poisson(1)
siblings, 32 signal + 32 nuisance features; a shared MLP encoder (64 -> 256 -> 64, unit-norm outputs);
batch 64, 30 epochs, AdamW (lr 2e-3, cosine schedule); the official first-stage loss (triplet margin
0.3, 10 hardest in-batch negatives, softmax-weighted). NGAME batching: random batches until epoch 4,
then balanced clusters refreshed every 4 epochs, of size 2 / 4 / 8 / 16 / 32 from epochs 4 / 8 / 12 / 16
/ 20 (the official curriculum, compressed). Stage 2 (`inception_zoo.xc.classifier`): classifiers
initialised from the label embeddings, trained (60 full-batch Adam steps) on the frozen embeddings
against each point's 16-label shortlist, fused with the embedding scores on a 100-label shortlist.
Metrics P@k, nDCG@k, PSP@k (A = 0.55, B = 1.5) as pyxclib.

Full setting (`get_config()`): LF-AmazonTitles-131K from the Extreme Classification Repository (the folder
of `trn_X_Y.txt`, `tst_X_Y.txt`, `trn/tst/lbl.raw.txt`, `filter_labels_test.txt`, read by
`inception_zoo.xc.data.load_lf_dataset`) and the authors' starting point,
sentence-transformers/msmarco-distilbert-base-v4 (any DistilBERT directory with `config.json`,
`model.safetensors` and `vocab.txt`), in `data/LF-AmazonTitles-131K` and `weights/` by default:
  hf download sentence-transformers/msmarco-distilbert-base-v4 --local-dir weights/msmarco-distilbert-base-v4
  python -m experiments.ngame --workdir=workdirs/ngame_at131k
Titles are WordPiece-tokenised to 32 tokens (`inception_zoo.xc.tokenize`), the encoder is loaded from the
weights (`inception_zoo.xc.encoder.load_distilbert`) and trained end to end with dropout by the same
stage-1 loop as the CPU setting (mean pooling, batch 1,600, AdamW lr 2e-4 with 100 warm-up steps, 300
epochs, clusters refreshed every 5 epochs, cluster size doubled at epochs 10, 20, 25, 50, 75, 100, 125,
150, 200); stage 2: classifiers for 100 epochs of batches of 2,048 points, lr 1e-3, margin 0.2, 3
negatives, shortlist of 300, beta 0.5; PSP with A = 0.6, B = 2.6 (the official configs); the test filter
removes the reciprocal pairs from the predictions. `--config=` amazon131k / wikiseealso320k /
wikipedia500k / amazontitles1.3m for the other LF sets, with their official first-stage settings
(`LF_DATASETS`; their official classifier stage uses a probabilistic contrastive loss, not implemented:
they get this stage 2). One device; stage 1 checkpoints every 1,000 steps (about 3 minutes at the
speed below), keeping 2 (about 0.8 GB each with Adam's moments). Differences from the official
code: cosine instead of linear decay; exact top-k shortlists instead of HNSW (a 4,096 x 131K similarity
block per call); classifier negatives from each point's shortlist, not from the clustered batches. Run
on a tiny generated LF folder with a 2-layer DistilBERT (tests/papers/test_ngame.py) and, once, on one H100 (jax
0.11.2) at the real model and batch (randomly initialised DistilBERT-base, batch 1,600, 32 tokens) over a
generated LF-style set of 40,000 / 10,000 / 10,000 titles: 0.18 s per step, 40 GB peak device memory,
3 epochs and stage 2 (100 steps) in 94 s (timed when an epoch was one scanned call; the step loop has
not been timed on a GPU). At that speed an LF-AmazonTitles-131K epoch (184 steps) takes
about 33 s plus its clustering: an estimate, the real set was not run here (no paper numbers reproduced).
"""
import itertools
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter, read_metrics
from inception_zoo.train import loop
from inception_zoo.train.fullbatch import fit
from inception_zoo.train.optim import make_optimizer, make_schedule
from inception_zoo.utils import plots
from inception_zoo.xc import batching, classifier, data, encoder, metrics, tokenize

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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="ngame_synthetic", data="synthetic", data_dir="", seeds=(0, 1),
      synthetic=dict(num_groups=100, labels_per_group=20, num_train=4096, num_test=2000, dim=32, nuisance_dim=32,
                     sibling_scale=0.35, noise=0.3, nuisance=1.0, zipf=0.7, mean_siblings=1.0),
      encoder=dict(name="mlp", hidden=256, dim=64),
      batch_size=64, num_epochs=30, eval_every=2, curriculum=(4, 8, 12, 16, 20), refresh_every=4,
      checkpoint_every=0, keep_checkpoints=2,  # runs of seconds: saved at their ends and on pre-emption
      margin=0.3, num_negatives=10, tau=0.1,
      optimizer=dict(name="adamw", weight_decay=0.0), schedule=dict(name="cosine", base_lr=2e-3, warmup_epochs=1.0),
      classifier=dict(steps=60, batch_size=0, learning_rate=1e-2, shortlist=16, margin=0.2, num_negatives=3,
                      beta=0.5),
      eval_shortlist=100, propensity_a=0.55, propensity_b=1.5))
  if arg == "runlocal":
    return c
  if arg is not None and arg not in LF_DATASETS:
    raise UserError(f"unknown setting '{arg}' (runlocal, {', '.join(LF_DATASETS)}, or none = "
                    f"LF-AmazonTitles-131K)")
  lf = LF_DATASETS[arg or "amazontitles131k"]
  c.update(name=f"ngame_{lf['data'].lower()}", data=lf["data"], data_dir=f"data/{lf['data']}", seeds=(0,),
           batch_size=lf["batch"], num_epochs=lf["epochs"], eval_every=10, curriculum=lf["curriculum"],
           refresh_every=5, num_negatives=lf["negatives"], propensity_a=lf["a"], propensity_b=lf["b"],
           eval_shortlist=300, checkpoint_every=1000)
  # The architecture comes from the weights' config.json; `embed_batch`: texts per call when embedding a
  # whole set (clustering, evaluation).
  c.encoder = ml_collections.ConfigDict(dict(name="distilbert", pretrained="weights/msmarco-distilbert-base-v4",
                                             max_len=lf["tokens"], lowercase=True, pooling="mean", embed_batch=1024))
  # The official schedule decays linearly after 100 warm-up steps; cosine here.
  c.schedule.update(name="cosine", base_lr=2e-4, warmup_epochs=100 * lf["batch"] / lf["train"])
  c.classifier.update(steps=100 * lf["train"] // 2048, batch_size=2048, learning_rate=1e-3, shortlist=300)
  return c


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
