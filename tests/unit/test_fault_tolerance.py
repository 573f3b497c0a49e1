"""Runs that are killed, pre-empted or moved to another mesh resume and end where an uninterrupted
run ends."""
import random
import signal

import chex
import flax
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from run_helpers import checkpoint_steps, final_state, output, run, start, wait_for_step
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
  proc.wait(timeout=600)
  err = output(proc)
  assert proc.returncode == 1, err
  last = err.strip().splitlines()[-1]
  assert last.startswith("pre-empted (SIGTERM) at step ") and "checkpoint saved" in last, err[-2000:]
  saved_at = int(last.split("at step ")[1].split(";")[0])
  assert saved_at in checkpoint_steps(broken) and saved_at >= 7

  run(broken, "--config.total_steps=10")
  assert_bitwise(final_state(straight, 10), final_state(broken, 10))


def as_dict(state):
  """A TrainState as the nested dict a checkpoint holds (same leaf order)."""
  return flax.serialization.to_state_dict(jax.device_get(state))


def restored_on(config, workdir):
  """The state `Setup` restores from `workdir` onto the config's mesh (nothing trained)."""
  setup = classification.Setup(config, workdir)
  setup.checkpoints.close()
  return setup.state


def test_checkpoint_restores_onto_another_mesh_and_training_continues(digits_config, tmp_path):
  """8-device data parallelism -> 4-device FSDP (trains on) -> 8-device data parallelism."""
  digits_config.update(fsdp_min_size=256, total_steps=4)
  digits_config.mesh.data = 8
  classification.train_and_evaluate(digits_config, str(tmp_path / "straight"))
  moved = str(tmp_path / "moved")
  digits_config.total_steps = 2
  classification.train_and_evaluate(digits_config, moved)

  digits_config.mesh.update(data=2, fsdp=2)  # 4 of the 8 devices, parameters sliced over 2
  digits_config.total_steps = 4
  state = restored_on(digits_config, moved)
  kernel = state.params["layer3"]["layers_0"]["conv2"]["kernel"]  # (3, 3, 32, 32)
  assert kernel.sharding.spec == P(None, None, "fsdp", None)  # the largest dimension 2 divides
  assert len(kernel.sharding.device_set) == 4
  assert {s.data.size for s in kernel.addressable_shards} == {kernel.size // 2}
  assert_bitwise(as_dict(state), final_state(moved, 2))  # moving data changes no value
  classification.train_and_evaluate(digits_config, moved)
  # Two steps on another layout: reductions split over 4 instead of 8 devices reorder float sums
  # (one step agrees to ~1e-6, test_sharding); a mangled or stale leaf would be far off.
  chex.assert_trees_all_close(final_state(moved, 4), final_state(str(tmp_path / "straight"), 4),
                              atol=1e-5, rtol=1e-5)

  digits_config.mesh.update(data=8, fsdp=1)  # FSDP -> data parallelism on all 8 devices
  state = restored_on(digits_config, moved)
  assert state.params["layer3"]["layers_0"]["conv2"]["kernel"].sharding.spec == P()
  assert_bitwise(as_dict(state), final_state(moved, 4))
