"""Runs that are killed, pre-empted or moved to another mesh resume and end where an uninterrupted
run ends."""
import os
import random
import signal

import chex
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from fault_helpers import checkpoint_steps, final_state, run, start, wait_for_step
from inception_zoo.train import classification


def assert_bitwise(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_killed_then_preempted_run_resumes_bitwise(tmp_path):
  straight, broken = tmp_path / "straight", tmp_path / "broken"
  run(straight, "--config.total_steps=10")

  # SIGKILL at a random step between saves (checkpoints at 3, 6, 9): no chance to clean up.
  kill_after = random.choice([4, 5])
  print(f"SIGKILL after step {kill_after}")
  proc = start(broken, "--config.total_steps=10")
  wait_for_step(proc, broken, kill_after)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert max(checkpoint_steps(broken)) < 10

  # Resume, then SIGTERM (a pre-emption notice): the run saves where it is and exits.
  proc = start(broken, "--config.total_steps=10")
  wait_for_step(proc, broken, 7)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 1
  last = err.strip().splitlines()[-1]
  assert last.startswith("pre-empted (SIGTERM) at step ") and "checkpoint saved" in last, err[-2000:]
  saved_at = int(last.split("at step ")[1].split(";")[0])
  assert saved_at in checkpoint_steps(broken) and saved_at >= 7

  run(broken, "--config.total_steps=10")
  assert_bitwise(final_state(straight, 10), final_state(broken, 10))


def test_checkpoint_restores_onto_another_mesh_and_training_continues(digits_config, tmp_path):
  """8-device data parallelism -> 4-device FSDP -> 8 devices again, against 8 devices throughout."""
  digits_config.fsdp_min_size = 256
  digits_config.mesh.data = 8
  classification.train_and_evaluate(digits_config, str(tmp_path / "straight"))
  moved = str(tmp_path / "moved")
  digits_config.total_steps = 2
  classification.train_and_evaluate(digits_config, moved)
  digits_config.mesh.update(data=2, fsdp=2)  # 4 of the 8 devices, parameters sliced over 2
  digits_config.total_steps = 4
  setup = classification.Setup(digits_config, moved)
  kernel = setup.state.params["features"]["layers_10"]["branch2_2"]["conv"]["kernel"]
  assert int(setup.state.step) == 2 and kernel.sharding.spec == P(None, None, None, "fsdp")
  assert len(kernel.sharding.device_set) == 4
  setup.checkpoints.close()
  classification.train_and_evaluate(digits_config, moved)
  digits_config.mesh.update(data=8, fsdp=1)
  digits_config.total_steps = 6
  classification.train_and_evaluate(digits_config, moved)
  chex.assert_trees_all_close(final_state(moved, 6)["params"],
                              final_state(str(tmp_path / "straight"), 6)["params"], atol=1e-5, rtol=1e-5)
