"""Inception-ResNet-v1 (Szegedy et al., 2016), paper 1 of the zoo, as drawn in Figs. 10-15.

CPU, embedded digits (about 2.5 minutes on 2 cores; held-out top-1 about 0.97):
  python -m experiments.inception_resnet_v1 --config=runlocal --workdir=workdirs/inception_resnet_v1_digits
ImageNet-1k, the paper's recipe (prepare `tfds build imagenet2012 --manual_dir=...` first; the paper
reports 78.7% top-1 / 94.5% top-5 single crop on the validation set, Table 2):
  python -m experiments.inception_resnet_v1 --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
Settings: experiments/common_inception.py.
"""
from experiments.common_inception import make_experiment

get_config, main = make_experiment("inception_resnet_v1")

if __name__ == "__main__":
  main()
