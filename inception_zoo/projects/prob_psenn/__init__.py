"""Prob-PSENN (Vadillo, Santana, Lozano, Kwiatkowska, "Uncertainty-Aware Explanations Through Probabilistic
Self-Explainable Neural Networks", arXiv 2403.13740, 2024), paper 27 of the zoo, on digits. Measurements:
README.md."""
