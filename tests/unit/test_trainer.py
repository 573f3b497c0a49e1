"""The classification trainer end to end on embedded digits: learning, resume, NaN, eval, init_from."""
import os

import jax
import numpy as np
import pytest

from run_helpers import final_state
from inception_zoo import UserError, ckpt
from inception_zoo.metrics import NonFiniteLoss, read_metrics
from inception_zoo.train import classification


def test_loss_falls(digits_config, tmp_path):
  digits_config.total_steps = 30
  digits_config.log_every = 5
  result = classification.train_and_evaluate(digits_config, str(tmp_path))
  losses = [r["train/loss"] for r in read_metrics(str(tmp_path)) if "train/loss" in r]
  assert len(losses) == 6
  assert losses[-1] < 0.9 * losses[0], losses
  assert 0.0 <= result["eval/top1"] <= 1.0 and result["eval/top5"] >= result["eval/top1"]
  assert os.path.exists(tmp_path / "config.json")
  assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))


def test_resume_is_bitwise_identical(digits_config, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  classification.train_and_evaluate(digits_config, straight)
  digits_config.total_steps = 4  # stop after step 4 (a checkpoint is written at the end) ...
  classification.train_and_evaluate(digits_config, resumed)
  digits_config.total_steps = 6  # ... and resume to 6 from the workdir
  classification.train_and_evaluate(digits_config, resumed)
  a, b = final_state(straight, 6), final_state(resumed, 6)
  assert int(a["step"]) == int(b["step"]) == 6
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_nan_stops_with_the_step_and_keeps_the_checkpoint(digits_config, tmp_path, monkeypatch):
  real = classification.pipeline.train_batches

  def poisoned(*args, start_batch=0, **kwargs):
    for i, batch in enumerate(real(*args, start_batch=start_batch, **kwargs), start=start_batch):
      if i == 4:  # the batch of step 5
        batch = dict(batch, image=np.full_like(batch["image"], np.nan))
      yield batch

  monkeypatch.setattr(classification.pipeline, "train_batches", poisoned)
  with pytest.raises(NonFiniteLoss, match="(loss|gradient norm) became nan .*at step 5"):
    classification.train_and_evaluate(digits_config, str(tmp_path))
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == [3]
  good = final_state(str(tmp_path), 3)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(good["params"]))
  # Clean data again and a lower learning rate: the run resumes at step 3 and finishes.
  monkeypatch.setattr(classification.pipeline, "train_batches", real)
  digits_config.schedule.base_lr /= 2
  classification.train_and_evaluate(digits_config, str(tmp_path))
  assert int(final_state(str(tmp_path), 6)["step"]) == 6


def test_eval_mode_and_init_from(digits_config, tmp_path):
  run = str(tmp_path / "run")
  trained = classification.train_and_evaluate(digits_config, run)
  digits_config.mode = "eval"
  assert classification.run(digits_config, run) == pytest.approx(trained)
  # Another run's weights (its EMA, which it evaluated) loaded into a fresh workdir score the same.
  digits_config.init_from = run
  assert classification.run(digits_config, str(tmp_path / "fresh")) == pytest.approx(trained)
  # With another number of classes the classifier restarts; everything else comes from the run.
  digits_config.mode = "train"
  digits_config.num_classes = 12
  digits_config.total_steps = 1
  classification.train_and_evaluate(digits_config, str(tmp_path / "finetune"))
  assert final_state(str(tmp_path / "finetune"), 1)["params"]["fc"]["kernel"].shape[-1] == 12


def test_merge_weights_resets_only_a_mismatched_head():
  fresh = {"params": {"body": {"kernel": np.zeros((3, 4))}, "head": {"kernel": np.zeros((4, 12))}}}
  loaded = {"params": {"body": {"kernel": np.ones((3, 4))}, "head": {"kernel": np.ones((4, 10))}}}
  merged, reset = ckpt.merge_weights(fresh, loaded, head="head")
  assert reset == ["params/head/kernel"]
  np.testing.assert_array_equal(merged["params"]["body"]["kernel"], 1)
  np.testing.assert_array_equal(merged["params"]["head"]["kernel"], 0)
  loaded["params"]["body"]["kernel"] = np.ones((3, 5))
  with pytest.raises(UserError, match=r"loaded 'params/body/kernel' has shape \(3, 5\)"):
    ckpt.merge_weights(fresh, loaded, head="head")


def test_missing_weights_directory_is_a_one_line_error(digits_config, tmp_path):
  digits_config.init_from = str(tmp_path / "nowhere")
  with pytest.raises(UserError, match=r"weights directory .*nowhere does not exist"):
    classification.train_and_evaluate(digits_config, str(tmp_path / "run"))


def test_resume_with_another_batch_size_is_refused(digits_config, tmp_path):
  digits_config.total_steps = 1
  classification.train_and_evaluate(digits_config, str(tmp_path))
  digits_config.input.batch_size = 16
  digits_config.total_steps = 2
  with pytest.raises(UserError, match="trained with global_batch 32; resuming with 16"):
    classification.train_and_evaluate(digits_config, str(tmp_path))


def test_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_resumes(digits_config, tmp_path, caplog):
  straight = str(tmp_path / "straight")
  classification.train_and_evaluate(digits_config, straight)
  run = str(tmp_path / "run")
  classification.train_and_evaluate(digits_config, run)  # checkpoints at steps 3 and 6
  state_dir = tmp_path / "run" / "checkpoints" / "6" / "state"
  for f in state_dir.rglob("*"):
    if f.is_file():
      f.write_bytes(b"\x00" * 7)  # a save cut short
  classification.train_and_evaluate(digits_config, run)  # resumes from 3 and redoes 4..6
  assert "checkpoint at step 6 does not restore" in caplog.text
  assert any(d.name.startswith("6.damaged-") for d in (tmp_path / "run" / "checkpoints").iterdir())
  for x, y in zip(jax.tree.leaves(final_state(straight, 6)), jax.tree.leaves(final_state(run, 6))):
    np.testing.assert_array_equal(x, y)
