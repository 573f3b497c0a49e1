"""DAGNN (Liu, Gao and Ji, "Towards Deeper Graph Neural Networks", KDD 2020), paper 22 of the zoo.
Measurements: README.md."""
