"""CDA (Yin and Shen, "Dataset Distillation via Curriculum Data Synthesis in Large Data Era", TMLR 2024,
arXiv:2311.18838), paper 25 of the zoo, on SRe2L's squeeze / recover / relabel pipeline (Yin, Xing and
Shen, NeurIPS 2023): the digits setting, and the full ImageNet-1K pipeline (projects/cda/sre2l.py).
Measurements: README.md."""
