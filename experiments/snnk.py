"""Scalable neural network kernels (Sehanobish et al., ICLR 2024), paper 8: random-feature layers,
closed-form bundled networks and SNNK adapters (inception_zoo/projects/snnk/, README.md there).

CPU setting (31 s of CPU; figure WORKDIR/snnk.png): kernel error slopes -0.50 (ReLU) / -0.51 (cos) in
m; the bundled network's closed form equals Adam's optimum (held-out MSE 0.479 both); on digits 5-9
over a frozen 0-4 MLP, the SNNK adapter 0.961 with 3.9x fewer adapter parameters than the bottleneck
adapter's 0.972:
  python -m experiments.snnk --config=runlocal --workdir=workdirs/snnk
Full setting: SNNK adapters in BERT-base on GLUE, the official run_glue.py defaults (config only).
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.snnk.run import run


def get_config(arg=None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  if arg == "runlocal":
    c.name = "snnk"
    c.kernel = ml_collections.ConfigDict(dict(
        dim=16, pairs=64, repeats=32, num_features=(16, 64, 256, 1024, 4096), kinds=("relu", "cos")))
    c.bundling = ml_collections.ConfigDict(dict(
        num_random_features=256, ridge=1.0, steps=1000, lr=1e-2, test_fraction=0.3))
    c.adapter = ml_collections.ConfigDict(dict(
        width=128, num_random_features=32, bottleneck=64, pretrain_steps=300, steps=300, lr=3e-3, full_lr=1e-3))
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = the GLUE BERT-base adapter setting)")
  c.name = "snnk_bert_glue"
  c.glue = ml_collections.ConfigDict(dict(
      model="bert-base-uncased", tasks=("cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"),
      num_random_features=8, orthogonal=True, kind="relu", init_std=0.02, positions=("attention", "ffn"),
      trainable=("adapter", "pooler", "classifier"), optimizer="adamw", lr=1e-5, weight_decay=0.1,
      batch_size=64, num_epochs=80, warmup_fraction=0.06, max_length=128))
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
