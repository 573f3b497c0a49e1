"""Prototype-based networks: classification-by-components (paper 28) and prototypical networks for
federated reconnaissance (paper 29)."""
