"""The segmentation trainer on the shared step loop: one compilation, 8 data-parallel devices equal one, exact
resume, sliding-window and multi-scale evaluation, bad labels as one-line errors, and the experiments' full
settings (ADE20K, VOC aug, Cityscapes recipes) training and evaluating end to end on folders written by the
test, with the real readers, pp ops, optimizer and schedule (the networks at their tiny widths, crops and
canvases scaled down)."""
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from experiments import deeplabv3plus, semantic_fpn
from segmentation_folders import write_ade20k, write_cityscapes, write_voc_aug
from inception_zoo import UserError, ckpt, sharding
from inception_zoo.data import datasets, pipeline
from inception_zoo.data.segmentation import shapes_seg_dataset
from inception_zoo.metrics import read_metrics
from inception_zoo.registry import create_model
from inception_zoo.train import segmentation
from inception_zoo.train.state import global_batch

datasets.register_dataset("shapes_seg_tiny", lambda split, data_dir=None: shapes_seg_dataset(
    split, size=64, num_train=32, num_test=6))


def tiny_config(experiment=semantic_fpn, steps: int = 3) -> ml_collections.ConfigDict:
  c = experiment.get_config("runlocal")
  c.model = ml_collections.ConfigDict(dict(type(create_model(c.model_name)).tiny_options))
  pp = "{}normalize|seg_pad(64)|seg_pack"
  c.input.update(data="shapes_seg_tiny", batch_size=8, eval_batch_size=6, pp_train=pp.format("seg_flip|"),
                 pp_eval=pp.format(""))
  c.total_steps, c.log_every, c.checkpoint_every = steps, 1, 2
  c.schedule.warmup_epochs = 0.0
  return c


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  c = ckpt.Checkpoints(str(tmp_path_factory.mktemp("empty")))  # nothing to restore: fresh states
  yield c
  c.close()


def steps_of(checkpoints, mesh_data: int, steps: int = 2):
  """Losses and parameters after `steps` jitted steps with the batch split over `mesh_data` devices."""
  config = tiny_config()
  config.mesh.data = mesh_data
  s = segmentation.Setup(config, "", checkpoints)
  traces = []
  train_step = segmentation.make_train_step(s.model, s.tx, config)
  step = jax.jit(lambda *a: (traces.append(1), train_step(*a))[1],
                 in_shardings=(s.shardings, sharding.batch_sharding(s.mesh)), donate_argnums=0)
  batches = pipeline.train_batches(s.train_data.source, s.pp_train, global_batch=8, seed=0, num_threads=1)
  state, losses = s.state, []
  for _ in range(steps):
    batch = next(batches)
    state, metrics = step(state, global_batch(s.mesh, {k: batch[k] for k in ("image", "label")}))
    losses.append(float(metrics["loss"]))
  assert len(traces) == 1  # static shapes: one compilation
  return losses, jax.device_get(state.params), s


def test_eight_devices_equal_one_and_the_step_compiles_once(checkpoints):
  """Data parallelism over 8 fake devices (one image each) follows the single-device run: losses to 1e-5 and
  parameters to 1e-4 after 2 steps (trainable BatchNorm over the global batch: synchronised BatchNorm; measured
  4e-5 apart at most)."""
  one_losses, one_params, s = steps_of(checkpoints, 1)
  eight_losses, eight_params, _ = steps_of(checkpoints, 8)
  np.testing.assert_allclose(eight_losses, one_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(eight_params), jax.tree.leaves(one_params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
  assert one_losses[1] != one_losses[0]


def test_resume_is_exact(tmp_path):
  """A run stopped after its step-2 checkpoint and resumed repeats steps 3 and 4 exactly: the same losses, the
  same evaluation (same config: the poly schedule depends on the total steps)."""
  config = tiny_config(steps=4)
  config.mesh.data = 1
  straight = segmentation.train_and_evaluate(config, str(tmp_path / "straight"))
  shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "4")
  resumed = segmentation.train_and_evaluate(config, str(tmp_path / "resumed"))
  losses = [r["train/loss"] for r in read_metrics(str(tmp_path / "resumed")) if "train/loss" in r]
  assert len(losses) == 6 and losses[4:] == losses[2:4]  # steps 3 and 4 again, after the copied 1..4
  assert resumed == straight and 0 <= straight["eval/mIoU"] <= 1


def test_sliding_window_and_flip_evaluation_agree_with_whole_image(checkpoints):
  """On images no larger than the window, the sliding window is the whole image; a flip-averaged evaluation
  runs image by image at each image's own size, and its scores stay within reach of the plain one."""
  config = tiny_config()
  config.mesh.data = 1
  whole = segmentation.Setup(config, "", checkpoints).evaluate()
  config.eval.update(mode="slide", crop=(64, 64), stride=(43, 43))
  config.input.pp_eval = "normalize|seg_pack"
  slide = segmentation.Setup(config, "", checkpoints).evaluate()
  assert slide == pytest.approx(whole, abs=1e-6)
  config.eval.update(mode="whole", flip=True)
  flipped = segmentation.Setup(config, "", checkpoints).evaluate()
  assert set(flipped) == set(whole) and flipped != whole


def test_a_class_id_past_the_models_classes_is_a_one_line_error(tmp_path):
  config = tiny_config()
  config.mesh.data, config.num_classes = 1, 3  # the shapes have 5 classes with the background
  with pytest.raises(UserError, match=r"label value [34] at pixel .* is not a class id 0..2"):
    segmentation.train_and_evaluate(config, str(tmp_path))


def test_unknown_loss_or_eval_mode_is_a_one_line_error(tmp_path, checkpoints):
  config = tiny_config()
  config.eval.mode = "sliding"
  with pytest.raises(UserError, match="eval.mode 'sliding'"):
    segmentation.Setup(config, "", checkpoints)


FULL_SETTINGS = [
    (semantic_fpn, None, "ade20k", write_ade20k, {"512": "48", "2048": "192"}),
    (deeplabv3plus, None, "voc_aug", write_voc_aug, {"512": "48"}),
    (deeplabv3plus, "cityscapes", "cityscapes", write_cityscapes, {"800": "48", "2048": "192", "1024": "96"}),
]


@pytest.mark.parametrize("experiment, arg, name, write, scaled", FULL_SETTINGS, ids=[s[2] for s in FULL_SETTINGS])
def test_full_setting_trains_evaluates_and_resumes_on_a_folder(experiment, arg, name, write, scaled, tmp_path):
  root = tmp_path / name
  write(root)
  config = experiment.get_config(arg)
  assert config.input.data == name
  config.model.update(type(create_model(config.model_name)).tiny_options)
  for key in ("pp_train", "pp_eval"):
    for big, small in scaled.items():
      config.input[key] = config.input[key].replace(big, small)
  crop = int(scaled["512" if "512" in scaled else "800"])
  config.eval.update(crop=(crop, crop), stride=(crop * 2 // 3, crop * 2 // 3))
  config.input.update(data_dir=str(root), batch_size=4, num_threads=2)
  config.mesh.data, config.total_steps, config.checkpoint_every, config.log_every = 1, 2, 2, 1
  workdir = str(tmp_path / "run")
  result = segmentation.train_and_evaluate(config, workdir)
  assert 0.0 <= result["eval/mIoU"] <= 1.0
  config.total_steps = 3
  segmentation.train_and_evaluate(config, workdir)
  assert [r["step"] for r in read_metrics(workdir) if "train/loss" in r] == [1, 2, 3]
