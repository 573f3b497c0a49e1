"""Federated reconnaissance (Hendryx, KC, Walls, Morrison, "Federated Reconnaissance: Efficient,
Distributed, Class-Incremental Learning", arXiv 2109.00150, 2021), paper 29 of the zoo, on digits.
Measurements: README.md."""
