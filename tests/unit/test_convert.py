"""`python -m inception_zoo.convert`: timm safetensors -> Orbax weights that init_from loads."""
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
import timm
import torch

from inception_zoo import UserError, ckpt
from inception_zoo.convert import convert_timm, read_safetensors, timm_key


def test_key_rule():
  assert timm_key("params", "features/layers_6/branch1/layers_0/conv/kernel") == "features.6.branch1.0.conv.weight"
  assert timm_key("batch_stats", "repeat_1/layers_3/branch0/bn/var") == "repeat_1.3.branch0.bn.running_var"
  assert timm_key("params", "classif/bias") == "classif.bias"


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
  torch.manual_seed(0)
  model = timm.create_model("inception_v4", pretrained=False)
  path = tmp_path_factory.mktemp("timm") / "inception_v4.safetensors"
  safetensors.numpy.save_file({k: v.numpy() for k, v in model.state_dict().items()}, str(path))
  return path


def test_cli_writes_weights_that_load(timm_file, tmp_path):
  out = tmp_path / "weights"
  proc = subprocess.run([sys.executable, "-m", "inception_zoo.convert", "--timm", "inception_v4",
                         "--checkpoint", str(timm_file), "--out", str(out)],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  assert "42,679,816 parameters" in proc.stdout
  loaded, card = ckpt.load_weights(str(out))
  assert card["model"] == "inception_v4" and card["num_classes"] == 1000
  _, direct = convert_timm("inception_v4", read_safetensors(str(timm_file)))
  for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(a, b)


def test_converter_is_strict(timm_file):
  state_dict = read_safetensors(str(timm_file))
  extra = dict(state_dict, **{"aux_head.weight": np.zeros((3, 3))})
  with pytest.raises(UserError, match="1 timm tensors have no Flax counterpart, e.g. 'aux_head.weight'"):
    convert_timm("inception_v4", extra)
  missing = {k: v for k, v in state_dict.items() if k != "features.0.conv.weight"}
  with pytest.raises(UserError, match="the timm checkpoint has no 'features.0.conv.weight'"):
    convert_timm("inception_v4", missing)
  with pytest.raises(UserError, match="the timm checkpoint has no classifier 'classif.weight'"):
    convert_timm("inception_resnet_v2", state_dict)


def test_bad_files_are_one_line_errors(tmp_path):
  bad = tmp_path / "bad.safetensors"
  bad.write_bytes(b"\x00\x01not a safetensors file")
  for args, message in [(["--checkpoint", str(bad)], "error: cannot read"),
                        (["--checkpoint", str(tmp_path / "none.safetensors")], "error: checkpoint")]:
    proc = subprocess.run([sys.executable, "-m", "inception_zoo.convert", "--timm", "inception_v4",
                           "--out", str(tmp_path / "o"), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(message) and len(proc.stderr.strip().splitlines()) == 1
  with pytest.raises(UserError, match="holds no weights"):
    ckpt.load_weights(str(tmp_path))
