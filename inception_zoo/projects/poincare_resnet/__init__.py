"""Poincare ResNet (van Spengler, Berkhout, Mettes, "Poincare ResNet", ICCV 2023), paper 19 of the zoo.
Measurements: README.md."""
