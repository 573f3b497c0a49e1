"""Magnitude invariant parametrizations (MIP) for hypernetworks (Ortiz, Guttag, Dalca, ICLR 2024), paper 10
of the zoo. Measurements: README.md."""
