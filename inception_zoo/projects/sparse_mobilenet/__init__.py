"""Fast Sparse ConvNets (Elsen, Dukhan, Gale, Simonyan, CVPR 2020), paper 17 of the zoo: MobileNet v1 with
its 1x1 convolutions and classifier pruned by gradual magnitude pruning (Zhu & Gupta 2018, Eq. 1), then
run with the sparse 1x1 path (inception_zoo/sparsity/spmm.py). Measurements: README.md."""
