"""SNNK (Sehanobish et al., ICLR 2024): snnk.py, random-feature layers, the SNNK adapter and the
closed-form bundled network; run.py, the CPU setting's driver. Measurements: README.md."""
