"""ViT-VQGAN's factorised, l2-normalised codebook (Yu et al., "Vector-quantized Image Modeling with Improved
VQGAN", ICLR 2022), paper 15 of the zoo: stage 1 on crops of real photographs. Measurements: README.md."""
