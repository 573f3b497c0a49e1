"""Inception-v4 (Szegedy et al., 2016), paper 1 of the zoo.

CPU, embedded digits (about 2-3 minutes on 2 cores; held-out top-1 above 0.9):
  python -m experiments.inception_v4 --config=runlocal --workdir=workdirs/inception_v4_digits
ImageNet-1k, the paper's recipe (prepare `tfds build imagenet2012 --manual_dir=...` first; paper:
80.0% top-1 / 95.0% top-5 single crop on the validation set):
  python -m experiments.inception_v4 --workdir=gs://.../inception_v4 --config.input.data_dir=...
See experiments/common_inception.py for the settings.
"""
import functools

from experiments.common_inception import inception_config
from inception_zoo.main import run_experiment
from inception_zoo.train import classification

get_config = functools.partial(inception_config, "inception_v4")

if __name__ == "__main__":
  run_experiment(get_config, classification.run)
