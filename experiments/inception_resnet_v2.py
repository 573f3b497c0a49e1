"""Inception-ResNet-v2 (Szegedy et al., 2016), paper 1 of the zoo: the released
TF-slim layout (timm `inception_resnet_v2`); `inception_resnet_v2_paper` is Fig. 15's.

CPU, embedded digits (about 5 minutes on 2 cores; held-out top-1 about 0.98):
  python -m experiments.inception_resnet_v2 --config=runlocal --workdir=workdirs/inception_resnet_v2_digits
ImageNet-1k, the paper's recipe (prepare `tfds build imagenet2012 --manual_dir=...` first; the paper
reports 80.1% top-1 / 95.1% top-5 single crop on the validation set, Table 2):
  python -m experiments.inception_resnet_v2 --workdir=WORKDIR --config.input.data_dir=TFDS_DIR
Settings: experiments/common_inception.py.
"""
from experiments.common_inception import make_experiment

get_config, main = make_experiment("inception_resnet_v2")

if __name__ == "__main__":
  main()
