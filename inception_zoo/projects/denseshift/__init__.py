"""DenseShift (Li, Liu, Yang, Courville, Xing, Partovi Nia, "DenseShift: Towards Accurate and Efficient Low-
Bit Power-of-Two Quantization", ICCV 2023), paper 3 of the zoo: 3-bit zero-free shift weights against the
zero-including shift baseline, the same levels trained directly, and full precision, transferred from a
trained checkpoint. Measurements: README.md."""
