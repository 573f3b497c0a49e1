"""Inception-v4 (Szegedy et al., 2016), paper 1 of the zoo.

CPU, embedded digits (about 3 minutes on 2 cores; held-out top-1 about 0.94):
  python -m experiments.inception_v4 --config=runlocal --workdir=workdirs/inception_v4_digits
ImageNet-1k, the paper's recipe (prepare `tfds build imagenet2012 --manual_dir=...` first; the paper
reports 80.0% top-1 / 95.0% top-5 single crop on the validation set, Table 2):
  python -m experiments.inception_v4 --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
Settings: experiments/common_inception.py.
"""
from experiments.common_inception import make_experiment

get_config, main = make_experiment("inception_v4")

if __name__ == "__main__":
  main()
