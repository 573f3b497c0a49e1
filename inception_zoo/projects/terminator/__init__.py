"""Terminator (Zhang, "HyperZ.Z.W Operator Connects Slow-Fast Networks for Full Context Interaction", arXiv
2401.17948, 2024), paper 26 of the zoo, on digits as 64-step sequences (1D) and 8x8 images (2D).
Measurements: README.md."""
