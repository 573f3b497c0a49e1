"""DAGNN (Liu, Gao and Ji, "Towards Deeper Graph Neural Networks", KDD 2020), paper 22 of the zoo
(inception_zoo/projects/dagnn/, README.md there: what is measured, and how).

CPU setting (about 40 s): a planted-partition graph with 5 labels per class: GCN 1.00 at depth 2 but 0.25
(chance) at depths 8 and 32; DAGNN 1.00 at K = 50 and 100; smoothness of A^l X 0.69 -> 0.003:
  python -m experiments.dagnn --config=runlocal --workdir=workdirs/dagnn
Full settings: --config=cora / citeseer / pubmed, the Planetoid public splits from the ind.* files.
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.dagnn.run import PLANETOID, run


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
