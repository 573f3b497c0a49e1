"""Dataset distillation: SRe2L's squeeze / recover / relabel pipeline and CDA's curriculum on the
recovery crops (dataset.py, Yin & Shen 2023)."""
