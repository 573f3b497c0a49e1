"""The shared step loop (train/loop.py) on a state that is not a TrainState: resume is exact, a
non-finite step stops the run with the last checkpoint intact, a changed input setting is refused."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from inception_zoo import ckpt
from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter, NonFiniteLoss, read_metrics
from inception_zoo.train import loop

TX = optax.adam(0.1)
CONFIG = ml_collections.ConfigDict({"seed": 0})


def init():
  params = {"w": jnp.zeros((3,))}
  return {"step": jnp.zeros([], jnp.int32), "params": params, "opt": TX.init(params),
          "key": jax.random.key_data(jax.random.key(7))}


@jax.jit
def train_step(state, batch):
  key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
  target = batch + 0.1 * jax.random.normal(key, (3,))  # per-step randomness from the state alone
  loss, grads = jax.value_and_grad(lambda p: jnp.sum((p["w"] - target) ** 2))(state["params"])
  updates, opt = TX.update(grads, state["opt"], state["params"])
  new = {**state, "step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
         "opt": opt}
  return new, {"loss": loss}


def batches(start, nan_at=None):
  for step in range(start + 1, 10 ** 6):  # the batch is a function of the step
    yield jnp.full((3,), np.nan if step == nan_at else float(step % 4))


def run(workdir, total_steps, nan_at=None, seed=0):
  checkpoints = ckpt.Checkpoints(str(workdir), every_steps=3)
  state, meta = loop.restore_or_start(checkpoints, init)
  loop.check_same_input(meta, str(workdir), seed=seed)
  start = int(state["step"])
  writer = MetricWriter(str(workdir), tensorboard=False)
  try:
    return loop.run_steps(state, train_step, batches(start, nan_at), start=start, total_steps=total_steps,
                          checkpoints=checkpoints, writer=writer,
                          meta=lambda step: loop.input_meta(CONFIG, step, seed=seed),
                          evaluate=lambda s: {"eval/w0": float(s["params"]["w"][0])}, log_every=2)
  finally:
    checkpoints.close()


def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
  whole, result = run(tmp_path / "whole", 8)
  run(tmp_path / "parts", 5)  # saves at 3 and at its last step, 5
  parts, _ = run(tmp_path / "parts", 8)
  np.testing.assert_array_equal(whole["params"]["w"], parts["params"]["w"])
  assert int(parts["step"]) == 8 and result["eval/w0"] == float(whole["params"]["w"][0])
  logged = [r["step"] for r in read_metrics(str(tmp_path / "whole")) if "train/loss" in r]
  assert logged == [2, 4, 6, 8]


def test_non_finite_step_stops_and_keeps_the_last_checkpoint(tmp_path):
  with pytest.raises(NonFiniteLoss, match="at step 5"):
    run(tmp_path, 8, nan_at=5)
  state, meta = loop.restore_or_start(ckpt.Checkpoints(str(tmp_path)), init)
  assert int(state["step"]) == 3 and meta["input"]["next_batch"] == 3
  with pytest.raises(UserError, match="trained with seed 0; resuming with 1"):
    loop.check_same_input(meta, str(tmp_path), seed=1)
