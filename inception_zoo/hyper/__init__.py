"""Hypernetworks: MIP (magnitude invariant parametrizations, Ortiz et al. 2024) and its baseline."""
