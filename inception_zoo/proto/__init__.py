"""Prototype-based networks: classification-by-components (paper 28), prototypical networks for
federated reconnaissance (paper 29) and probabilistic self-explaining prototype autoencoders (paper 27)."""
