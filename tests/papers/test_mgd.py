"""MGD's distillation task (projects/mgd/train.py): with its distillation off the student trains exactly as the
supervised segmentation trainer; teachers equal to the student give zero image- and region-level losses; the
full settings train, evaluate and resume exactly on folders laid out as CPS / MGD's lists name them."""
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import mgd as experiment
from run_helpers import final_state
from segmentation_folders import write_cityscapes, write_voc_aug
from inception_zoo import UserError, ckpt, create_model
from inception_zoo.data import datasets
from inception_zoo.data.segmentation import shapes_texture_dataset
from inception_zoo.metrics import read_metrics
from inception_zoo.projects.mgd import train as mgd
from inception_zoo.train import distill, loop, segmentation
from inception_zoo.train.state import global_batch

SIZE = 48
datasets.register_dataset("shapes_texture_tiny", lambda split, data_dir=None: shapes_texture_dataset(
    split, size=SIZE, num_train=32, num_test=6))


def save_random_weights(directory, name, seed, num_classes, **options):
  model = create_model(name, num_classes=num_classes, **options)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, SIZE, SIZE, 3)), train=False))(jax.random.key(seed))
  ckpt.save_weights(str(directory), jax.device_get(dict(variables)), {"source": f"random:{seed}"})
  return str(directory)


def tiny(name):
  return dict(type(create_model(name)).tiny_options)


def shapes_config(tmp_path, steps: int = 2) -> ml_collections.ConfigDict:
  """The CPU setting on 32 scenes of 48 px (8 labelled), tiny networks and random teachers."""
  c = experiment.get_config("runlocal")
  del c["prepare"]
  c.input.update(data="shapes_texture_tiny", train_split="labeled_1-4", unlabeled_split="unlabeled_1-4",
                 batch_size=4, eval_batch_size=6)
  c.model = tiny(c.model_name)
  for role, seed in zip(mgd.ROLES, (1, 2)):
    name = "deeplabv3plus_resnet18"
    c.teachers[role] = distill.teacher(name, save_random_weights(tmp_path / role, name, seed, 5, **tiny(name)),
                                       **tiny(name))
  c.total_steps, c.log_every, c.checkpoint_every = steps, 1, steps
  return c


def test_with_distillation_off_the_student_trains_as_the_supervised_trainer(tmp_path):
  c = shapes_config(tmp_path)
  c.mgd.update(pixel_weight=0.0, image_weight=0.0, region_weight=0.0)
  mgd.train_and_evaluate(c, str(tmp_path / "mgd"))
  plain = segmentation.base_config()
  for key in ("input", "optimizer", "schedule", "loss", "eval", "mesh", "model"):
    plain[key] = c[key]
  del plain.input["unlabeled_split"]
  plain.update(model_name=c.model_name, seed=c.seed, total_steps=c.total_steps, checkpoint_every=c.total_steps)
  segmentation.train_and_evaluate(plain, str(tmp_path / "plain"))
  a, b = final_state(tmp_path / "mgd", 2)["params"], final_state(tmp_path / "plain", 2)["params"]
  # The same labelled batches and updates; the student's extra forward on the mixed images moves only BatchNorm
  # statistics, which the training forward does not read.
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)


def test_teachers_equal_to_the_student_give_zero_image_and_region_losses(tmp_path):
  c = shapes_config(tmp_path)
  c.teachers.image.model_name = c.teachers.region.model_name = c.model_name
  with loop.Run(str(tmp_path / "run"), c) as run:
    s = mgd.Setup(c, str(tmp_path / "run"), run.checkpoints)
    student = {"params": s.state.params, "batch_stats": s.state.batch_stats}
    step = jax.jit(mgd.make_train_step(s, c))
    batch = next(mgd.batches(s, 0))
    _, metrics = step(s.state, global_batch(s.mesh, batch), {"region": student, "image": student})
  metrics = jax.device_get(metrics)
  assert metrics["image_loss"] == 0.0 and abs(metrics["region_loss"]) < 1e-9, metrics
  # The pixel term is then each teacher's argmax, i.e. the student's own, learnt four times over (two teachers,
  # mixed and labelled images): positive, and below four times log(classes).
  assert 0.0 < metrics["pixel_loss"] < 4 * np.log(5), metrics
  assert metrics["teacher_agreement"] == 1.0


def test_teachers_and_split_are_checked(tmp_path):
  c = shapes_config(tmp_path)
  c.input.unlabeled_split = ""
  with pytest.raises(UserError, match="unlabeled_split"):
    mgd.train_and_evaluate(c, str(tmp_path / "a"))
  c = shapes_config(tmp_path / "b")
  del c.teachers["image"]
  with pytest.raises(UserError, match="region and image"):
    mgd.train_and_evaluate(c, str(tmp_path / "b" / "run"))


def write_partitions(path, labelled, unlabelled, line):
  path.mkdir(parents=True, exist_ok=True)
  for kind, names in (("labeled", labelled), ("unlabeled", unlabelled)):
    (path / f"train_aug_{kind}_1-8.txt").write_text("".join(line(n) for n in names))


@pytest.mark.parametrize("arg", ["cityscapes_r18", "voc_mbv2"])
def test_full_setting_trains_evaluates_and_resumes_exactly_on_a_folder(arg, tmp_path):
  root = tmp_path / arg
  c = experiment.get_config(arg)
  if arg.startswith("cityscapes"):
    write_cityscapes(root)
    names = [f"aachen_{i:06d}_000019" for i in range(8)]
    write_partitions(root / "config_new" / "subset_train", names[:2], names[2:],
                     lambda n: f"/images/train/{n}.png\t/segmentation/train/{n}_gtFine.png\n")
    crop, num_classes = 48, 19
  else:
    write_voc_aug(root)
    names = [f"2007_{i:06d}" for i in range(8)]
    write_partitions(root / "subset_train_aug", names[:2], names[2:], lambda n: f"{n}\n")
    crop, num_classes = 48, 21
  for key in ("pp_train", "pp_eval"):
    c.input[key] = c.input[key].replace("800", str(crop)).replace("512", str(crop))
  c.eval.update(crop=(crop, crop), stride=(32, 32))
  c.model = tiny(c.model_name)
  for role, seed in zip(mgd.ROLES, (1, 2)):
    t = c.teachers[role]
    t.model = tiny(t.model_name)
    t.weights = save_random_weights(tmp_path / role, t.model_name, seed, num_classes, **t.model)
  c.input.update(data_dir=str(root), batch_size=2, num_threads=2)
  c.mesh.data, c.total_steps, c.checkpoint_every, c.log_every = 1, 3, 2, 1
  result = mgd.train_and_evaluate(c, str(tmp_path / "run"))
  assert 0.0 <= result["eval/mIoU"] <= 1.0
  rows = [r for r in read_metrics(str(tmp_path / "run")) if "train/loss" in r]
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert all(r["train/image_loss"] > 0 and r["train/region_loss"] > 0 for r in rows), rows
  # Stopped after its step-2 checkpoint and resumed, the run repeats step 3 exactly.
  shutil.copytree(tmp_path / "run", tmp_path / "resumed")
  shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "3")
  assert mgd.train_and_evaluate(c, str(tmp_path / "resumed")) == result
  jax.tree.map(np.testing.assert_array_equal, final_state(tmp_path / "run", 3), final_state(tmp_path / "resumed", 3))
