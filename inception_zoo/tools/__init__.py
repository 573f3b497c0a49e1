"""Command-line tools over the whole library (the top layer: they may import anything below)."""
