"""DRCT (Hsu, Lee, Chou, "DRCT: Saving Image Super-resolution away from Information Bottleneck", CVPR 2024
Workshops), paper 24 of the zoo: a tiny DRCT trained for x2 super-resolution on CPU. Measurements:
README.md."""
