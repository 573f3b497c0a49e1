"""LightHGNN (Feng et al., "LightHGNN: Distilling Hypergraph Neural Networks into MLPs for 100x Faster
Inference", ICLR 2024), paper 18 of the zoo (inception_zoo/projects/lighthgnn/, README.md there).

CPU setting (about 20 s): a 500-vertex hypergraph block model with weak features: MLP 0.57, HGNN teacher
0.95, LightHGNN 0.94, LightHGNN+ 0.95, inference by the MLP alone (speed: benchmarks/hypergraph_inference.py):
  python -m experiments.lighthgnn --config=runlocal --workdir=workdirs/lighthgnn
Full setting: a 5,000-vertex synthetic hypergraph (the paper's co-citation sets need files not shipped).
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.lighthgnn.run import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "lighthgnn"
  c.seed = 0
  c.hypergraph = ml_collections.ConfigDict(dict(num_classes=5, class_size=1000, num_edges=5000, min_size=2,
                                                max_size=6, p_intra=0.8, feature_dim=64, signal=0.3))
  c.train_per_class = 20
  c.val_per_class = 100
  c.teacher = ml_collections.ConfigDict(dict(hidden=32, dropout=0.5))
  c.student = ml_collections.ConfigDict(dict(hidden=128, dropout=0.5))
  c.lr = 0.01
  c.weight_decay = 5e-4
  c.total_steps = 200
  c.log_every = 200
  c.lamb = 0.0
  c.tau = 1.0
  c.noise_level = 1.0
  if arg == "runlocal":
    c.hypergraph.update(class_size=100, num_edges=400)
    c.train_per_class = 5
    c.val_per_class = 10
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal; default = the synthetic full setting)")
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
