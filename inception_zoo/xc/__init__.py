"""Extreme classification (paper 6, NGAME): Siamese encoders, negative-mining-aware mini-batching,
shortlist classifiers, XC metrics and the LF-* dataset readers."""
