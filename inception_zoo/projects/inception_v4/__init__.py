"""Residual connections accelerate the training of Inception networks (paper 1's central claim).
Measurements: README.md."""
