"""Random pruning at initialisation (Liu et al., "The Unreasonable Effectiveness of Random Pruning: Return
of the Most Naive Baseline for Sparse Training", ICLR 2022), paper 16 of the zoo. Measurements:
README.md."""
