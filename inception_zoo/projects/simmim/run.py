"""SimMIM's driver: pre-training, or fine-tuning a classifier from it (the recipes are
experiments/simmim_swinv2.py)."""
import ml_collections

from inception_zoo.projects.simmim import task as simmim
from inception_zoo.train import classification


def train(config: ml_collections.ConfigDict, workdir: str):
  """Pre-training configs have `simmim` fields; the fine-tuning one is a classification config."""
  return (simmim.run if "simmim" in config else classification.run)(config, workdir)
