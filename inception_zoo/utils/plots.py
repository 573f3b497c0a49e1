"""Figures of the experiments: headless pyplot (runs in CI and on cluster nodes) and one way to save."""


def pyplot():
  """matplotlib's pyplot on the Agg backend, imported on first use (plots are off the training path)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save(fig, path: str, dpi: int = 100):
  """Lays out, writes and closes `fig` (closed figures do not pile up over a sweep's many runs)."""
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  pyplot().close(fig)
