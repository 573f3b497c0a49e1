"""Command line and config overrides: values keep their types, mistakes get one line and exit 2."""
import subprocess
import sys

import ml_collections
import pytest

from experiments.common_inception import inception_config
from inception_zoo import UserError
from inception_zoo.main import apply_override, parse_args, run_experiment


@pytest.fixture
def config():
  return inception_config("inception_v4", "runlocal")


def test_overrides_keep_types(config):
  apply_override(config, "total_steps", "12")
  apply_override(config, "schedule.base_lr", "0.1")
  apply_override(config, "input.pp_train", "decode|resize(75)")
  apply_override(config, "input.data_dir", "/data/tfds")
  apply_override(config, "model.width", "0.25")
  apply_override(config, "mesh.data", "1")
  assert config.total_steps == 12 and config.schedule.base_lr == 0.1
  assert config.input.pp_train == "decode|resize(75)" and config.input.data_dir == "/data/tfds"
  assert config.model.width == 0.25 and config.mesh.data == 1


def test_unknown_field_suggests_the_closest(config):
  with pytest.raises(UserError,
                     match=r"unknown config field 'config.schedule.base_rl'; did you mean 'schedule.base_lr'\?"):
    apply_override(config, "schedule.base_rl", "0.1")
  with pytest.raises(UserError, match=r"unknown config field 'config.totl_steps'; did you mean 'total_steps'\?"):
    apply_override(config, "totl_steps", "3")


def test_bad_value_names_the_field(config):
  with pytest.raises(UserError, match=r"bad value for config.total_steps: 'many'"):
    apply_override(config, "total_steps", "many")


def test_flags():
  args = parse_args(["--config=runlocal", "--workdir=/tmp/w", "--config.seed=3"])
  assert args["config"] == "runlocal" and args["workdir"] == "/tmp/w"
  assert args["overrides"] == [("seed", "3")]
  with pytest.raises(UserError, match=r"unknown flag '--wokdir'; did you mean 'workdir'\?"):
    parse_args(["--wokdir=/tmp"])


@pytest.mark.parametrize("flag, message", [
    ("--config.model_name=inception_v5", "error: unknown model 'inception_v5'; did you mean 'inception_v4'?"),
    ("--config.optimizer.nme=sgd",
     "error: unknown config field 'config.optimizer.nme'; did you mean 'optimizer.name'?"),
])
def test_experiment_cli_errors_are_one_line(flag, message, tmp_path):
  proc = subprocess.run([sys.executable, "-m", "experiments.inception_v4", "--config=runlocal",
                         f"--workdir={tmp_path}", flag], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(message)
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert "Traceback" not in proc.stderr


def test_every_run_ends_with_a_summary(tmp_path, capsys):
  """`run_experiment` prints the scalars a driver returns (nested ones flattened) and where its figures are."""
  (tmp_path / "curve.png").write_bytes(b"")
  result = {"test/top1": 0.91234, "per_seed": {"0": 0.5, "1": 0.25}, "curve": [1, 2], "note": "x"}
  out = run_experiment(lambda arg: ml_collections.ConfigDict(dict(name="toy")), lambda c, w: result,
                       argv=[f"--workdir={tmp_path}"])
  assert out is result
  lines = capsys.readouterr().out.splitlines()
  assert lines[-2] == "toy done: test/top1 0.9123, per_seed/0 0.5, per_seed/1 0.25"
  assert lines[-1] == f"  workdir {tmp_path} (figures: curve.png)"
