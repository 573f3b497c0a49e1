"""SimMIM pre-training of Swin Transformer V2 (Xie et al., "SimMIM: A Simple Framework for Masked Image
Modeling", CVPR 2022; the pre-training of Liu et al., "Swin Transformer V2", CVPR 2022), and fine-tuning
a classifier from it. Measurements: README.md."""
