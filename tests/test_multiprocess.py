"""Two processes on 127.0.0.1 (4 CPU devices each, jax.distributed with gloo collectives) train like
one process with 8 devices, and their checkpoint restores and trains on in one process."""
import socket

import chex
import numpy as np

from fault_helpers import final_state, losses, run, start


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
  single, multi = tmp_path / "single", tmp_path / "multi"
  run(single, "--config.total_steps=4", devices=8)
  port = free_port()
  procs = [start(multi, "--config.total_steps=4", f"--coordinator_address=127.0.0.1:{port}",
                 "--num_processes=2", f"--process_id={i}", devices=4) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
  a, b = losses(single), losses(multi)  # process 0 alone writes metrics
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  np.testing.assert_allclose([b[k] for k in sorted(b)], [a[k] for k in sorted(a)], rtol=1e-5)
  chex.assert_trees_all_close(final_state(multi, 4)["params"], final_state(single, 4)["params"],
                              atol=1e-5, rtol=1e-5)
  # The two-process checkpoint resumes in a single process, which trains on.
  run(multi, "--config.total_steps=6", devices=8)
  assert max(losses(multi)) == 6
