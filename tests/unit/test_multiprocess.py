"""Two processes on 127.0.0.1 (4 CPU devices each, jax.distributed with gloo collectives) train like
one process with 8 devices, and their checkpoint restores and trains on in one process."""
import socket

import chex
import numpy as np

from run_helpers import SMALL_NET, final_state, flags, losses, output, run, start


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# Two meshes sum in different orders: one and two processes agree to float rounding, not bitwise.
MODEL = flags(SMALL_NET)

def test_two_processes_equal_one_process(tmp_path):
  single, multi = tmp_path / "single", tmp_path / "multi"
  run(single, *MODEL, "--config.total_steps=3", devices=8)
  port = free_port()
  procs = [start(multi, *MODEL, "--config.total_steps=3", f"--coordinator_address=127.0.0.1:{port}",
                 "--num_processes=2", f"--process_id={i}", devices=4, log=tmp_path / f"process{i}.log")
           for i in range(2)]
  for p in procs:
    p.wait(timeout=900)
    assert p.returncode == 0, output(p)
  a, b = losses(single), losses(multi)  # process 0 alone writes metrics
  assert sorted(a) == sorted(b) == [1, 2, 3]
  np.testing.assert_allclose([b[k] for k in sorted(b)], [a[k] for k in sorted(a)], rtol=1e-5)
  chex.assert_trees_all_close(final_state(multi, 3)["params"], final_state(single, 3)["params"],
                              atol=1e-5, rtol=1e-5)
  # The two-process checkpoint resumes in a single process, which trains on.
  run(multi, *MODEL, "--config.total_steps=5", devices=8)
  assert max(losses(multi)) == 5
