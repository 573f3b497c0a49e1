"""eas's experiment driver (README.md; the recipes are experiments/eas.py)."""
import os
from typing import Dict

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.eas import eas, net2net
from inception_zoo.utils import plots


def load_arrays(config) -> tuple:
  """(x_train, y_train, x_val, y_val, x_test, y_test): images in [0, 1]; the validation split is the
  last `val_size` of a fixed permutation of the training split."""
  if config.data == "digits":
    (x, y), test = datasets.digits_arrays("train", flat=False), datasets.digits_arrays("test", flat=False)
  else:
    def arrays(split):
      source = datasets.get_dataset(config.data, split).source
      items = [source[i] for i in range(len(source))]
      return (np.stack([it["image"] for it in items]).astype(np.float32) / 255.0,
              np.array([it["label"] for it in items], np.int32))
    (x, y), test = arrays("train"), arrays("test")
  if not 0 < config.val_size < len(y):
    raise UserError(f"val_size {config.val_size} must be between 0 and the {len(y)} training images")
  perm = np.random.default_rng(config.data_seed).permutation(len(y))
  train, val = perm[:-config.val_size], perm[-config.val_size:]
  return x[train], y[train], x[val], y[val], *test


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  x_train, y_train, x_val, y_val, x_test, y_test = load_arrays(config)
  num_classes = int(max(y_train.max(), y_test.max())) + 1
  arch = net2net.Arch(config.kind, tuple(tuple(tuple(layer) for layer in block) for block in config.start),
                      stem=config.stem, transitions=tuple(config.transitions))
  space = eas.Space(widths=tuple(config.widths), kernels=tuple(config.kernels), max_layers=config.max_layers,
                    max_blocks=len(arch.blocks), max_len=len(arch.blocks) * (config.max_layers + 1) - 1)
  trainer = eas.Trainer(space, len(arch.blocks), (x_train, y_train, x_val, y_val), num_classes,
                        steps=config.train_steps, batch_size=config.batch_size, learning_rate=config.learning_rate)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  # The start net, shared by every search: trained in rounds of the children's budget (one compile).
  start = eas.Candidate(arch, net2net.Net(arch, num_classes).init(jax.random.key(config.data_seed), x_train[:1]),
                        {}, 0.0)
  for r in tqdm(range(config.start_rounds), desc="start net", leave=False, disable=None):
    start = trainer(start.arch, start.variables, 1000 + r)
  result: Dict[str, float] = {"start/val_accuracy": start.accuracy,
                              "start/test_accuracy": trainer.score(start, x_test, y_test),
                              "start/params": float(net2net.num_params(arch, x_train.shape[-1], num_classes))}
  curves = {}
  for seed in config.seeds:
    for policy in ("controller", "random"):
      prefix = f"{policy}/seed{seed}/"
      search = eas.Search(space, trainer, start, policy=policy, num_samples=config.num_samples,
                          wider_actions=config.wider_actions, deeper_actions=config.deeper_actions,
                          learning_rate=config.controller_lr, entropy_penalty=config.entropy_penalty,
                          baseline_decay=config.baseline_decay, wider_noise=config.wider_noise, seed=seed,
                          writer=writer, prefix=prefix)
      curves[(policy, seed)] = search.run(config.num_steps, log=tqdm.write)
      best = search.best
      result[prefix + "best_val_accuracy"] = best.accuracy
      result[prefix + "best_test_accuracy"] = trainer.score(best, x_test, y_test)
      result[prefix + "best_params"] = float(net2net.num_params(best.arch, x_train.shape[-1], num_classes))
      result[prefix + "mean_val_accuracy"] = float(np.mean(curves[(policy, seed)][1:]))
      tqdm.write(f"{prefix}best {best.arch.describe()}: val {best.accuracy:.4f}, "
                 f"test {result[prefix + 'best_test_accuracy']:.4f}")
  for policy in ("controller", "random"):
    for metric in ("best_val_accuracy", "best_test_accuracy"):
      result[f"{policy}/{metric}"] = float(np.mean([result[f"{policy}/seed{s}/{metric}"] for s in config.seeds]))
  writer.write(config.num_steps, result)
  writer.close()
  plot(curves, start.accuracy, result, config.seeds, os.path.join(workdir, "eas_search.png"))
  return result


def plot(curves, start_accuracy: float, result: Dict[str, float], seeds, path: str):
  plt = plots.pyplot()
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.5))
  colors = {"controller": "C0", "random": "C1"}
  for (policy, seed), curve in curves.items():
    ax.plot(np.arange(len(curve)), curve, "-" if seed == min(s for _, s in curves) else "--",
            color=colors[policy], label=f"{policy} (seed {seed})")
  ax.axhline(start_accuracy, color="gray", lw=0.8, label="start net")
  ax.set_xlabel("evaluated networks")
  ax.set_ylabel("best validation accuracy (digits)")
  ax.legend(fontsize=7)
  # The claim on held-out data: each search's selected network on the test split, per seed.
  for p, policy in enumerate(("controller", "random")):
    tests = [result[f"{policy}/seed{s}/best_test_accuracy"] for s in seeds]
    bx.plot(np.arange(len(seeds)) + 0.1 * (2 * p - 1), tests, "o", color=colors[policy], label=policy)
  bx.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
  bx.set_ylabel("test accuracy of the selected network")
  bx.legend(fontsize=7)
  plots.save(fig, path)
