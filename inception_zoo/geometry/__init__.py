"""Non-Euclidean geometry for networks: the Poincare ball (poincare.py)."""
