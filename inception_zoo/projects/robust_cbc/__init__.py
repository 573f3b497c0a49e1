"""Robust CBC (Saralajew, Rana, Villmann, Shaker, "A Robust Prototype-Based Network with Interpretable RBF
Classifier Foundations", AAAI 2025), paper 28 of the zoo: the shallow setting on digits. Measurements:
README.md."""
