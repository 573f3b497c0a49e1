"""SimQ-NAS (Sridhar, Szankin, Chen, Sundaresan, Sarah, "SimQ-NAS: Simultaneous Quantization Policy and
Neural Architecture Search", arXiv:2312.13301, 2023), paper 31 of the zoo. Measurements: README.md."""
