"""Federated reconnaissance (Hendryx, KC, Walls, Morrison, "Federated Reconnaissance: Efficient,
Distributed, Class-Incremental Learning", arXiv 2109.00150, 2021), paper 29 of the zoo, on digits.
(inception_zoo/projects/federated_recon/, README.md there: what is measured, and how).

CPU setting (about 20 s): digits 5-9 learned by 3 clients without gradients and merged: merged prototypes =
pooled centroids (4e-16); old / new / all 0.96 / 0.78 / 0.87 vs fine-tuned softmax 0.00 / 0.96 / 0.48:
  python -m experiments.federated_recon --config=runlocal --workdir=workdirs/federated_recon
Full setting: Conv-4 on Omniglot (tfds) and mini-ImageNet (from a directory).
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.federated_recon.run import run


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
