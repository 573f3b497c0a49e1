"""What the benchmarks share: the best wall time of a call, the least disturbed by the rest of the machine."""
import time
from typing import Callable

import jax


def best_time(fn: Callable[[], object], iters: int, warmup: int = 1) -> float:
  """Minimum seconds per call over `iters` calls after `warmup` calls (the first one compiles); JAX
  results are waited for, so asynchronous dispatch does not hide the work."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return min(times)
