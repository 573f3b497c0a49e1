"""Checkpoints written before the restructure (commit a1baf1c, by tests/data/premove/make_premove.py)
restore in today's tree and training goes on from them: the move kept every parameter path and the
optimizer states' structure (a checkpoint that did not restore would be set aside and the run would
start again from step 0)."""
import pathlib
import shutil

import jax

from experiments import pixpro, random_pruning
from inception_zoo.metrics import read_metrics
from inception_zoo.projects.pixpro import run as pixpro_run
from inception_zoo.projects.random_pruning import run as pruning_run
from inception_zoo.train import classification

DATA = pathlib.Path(__file__).parents[1] / "data" / "premove"


def workdir_from(name: str, path: pathlib.Path) -> str:
  shutil.copytree(DATA / f"{name}_checkpoints", path / "checkpoints")
  return str(path)


def trained_steps(workdir: str):
  return [r["step"] for r in read_metrics(workdir) if "train/loss" in r]


def test_a_sparse_classifier_checkpoint_resumes(tmp_path):
  c = random_pruning.get_config("runlocal")
  c.model.width, c.total_steps, c.checkpoint_every, c.keep_checkpoints, c.log_every = 8, 3, 1, 1, 1
  c.widths, c.mesh.data = (), 1
  c.input.eval_batch_size = 360
  workdir = workdir_from("random_pruning", tmp_path)
  s = classification.Setup(c, workdir, pruning_run.TASK)
  s.checkpoints.close()
  assert s.meta["input"]["next_batch"] == 2 and int(jax.device_get(s.state.step)) == 2
  classification.train_and_evaluate(c, workdir, pruning_run.TASK)  # its ERK masks live in the optimizer state
  assert trained_steps(workdir) == [3]


def test_a_pixpro_checkpoint_resumes(tmp_path):
  p = pixpro.get_config("runlocal")
  p.update(methods=("pixpro",), width=8, hidden_dim=16, dim=8, total_steps=3, log_every=1, probe_steps=1,
           num_scenes=8, probe_scenes=4, probe_crops=4)
  workdir_from("pixpro", tmp_path / "pixpro")
  pixpro_run.run(p, str(tmp_path))
  assert trained_steps(str(tmp_path / "pixpro")) == [3]
