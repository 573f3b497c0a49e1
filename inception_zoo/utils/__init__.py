"""Plots shared by the experiments (matplotlib, headless)."""
