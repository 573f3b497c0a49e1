"""Sparse training and sparse inference: random pruning at initialisation (masks.py, Liu et al. 2022),
gradual magnitude pruning (gradual.py, Zhu & Gupta 2018 as in Elsen et al. 2020), the optimizer wrapper
that holds the masks (training.py) and the sparse 1x1-convolution inference path (spmm.py)."""
