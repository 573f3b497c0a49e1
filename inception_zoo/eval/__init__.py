"""Evaluation of generative models (FID, Inception Score)."""
