"""NGAME (Dahiya, Gupta, Saini, Soni, Wang, Dave, Jiao, K, Dey, Singh, Hada, Jain, Paliwal, Mittal, Mehta,
Ramjee, Agarwal, Kar, Varma, "NGAME: Negative Mining-aware Mini-batching for Extreme Classification",
WSDM 2023), paper 6 of the zoo: negative-mining-aware mini-batching on a synthetic extreme-classification
set (CPU) and on the paper's LF-* product-title sets with DistilBERT (full setting).
(inception_zoo/projects/ngame/, README.md there: what is measured, and how).

CPU setting (about 45 s): 2,000 synthetic labels; clustered mini-batches mine harder negatives (similarity
0.68 vs 0.51) and reach P@1 0.656 vs 0.624 for random batches; stage-2 classifiers on the shortlist 0.756:
  python -m experiments.ngame --config=runlocal --workdir=workdirs/ngame
Full setting: LF-AmazonTitles-131K (and four other LF sets) with DistilBERT, the official recipes:
  python -m experiments.ngame --workdir=workdirs/ngame_at131k
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.ngame.run import LF_DATASETS, run


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
