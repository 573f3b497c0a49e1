"""LightHGNN (Feng et al., "LightHGNN: Distilling Hypergraph Neural Networks into MLPs for 100x Faster
Inference", ICLR 2024), paper 18 of the zoo. Measurements: README.md."""
