"""Parameter-estimation rates of softmax Gaussian mixtures of experts with a temperature (Nguyen, Akbarian &
Ho, "Is Temperature Sample Efficient for Softmax Gaussian Mixture of Experts?", ICML 2024), paper 13.
Measurements: README.md."""
