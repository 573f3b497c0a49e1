"""InceptionNeXt (paper 4) equals timm's `inception_next_*`: eval-mode logits at the native 224 px
(seeded random weights, BatchNorm/LayerNorm, biases and layer scales randomised; see timm_helpers),
parameter counts, and the stage feature maps."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from timm_helpers import abstract_param_count, max_logit_error, randomized_timm

from inception_zoo import ckpt, create_model
from inception_zoo.convert import timm_key

PARAMS = {"inception_next_atto": 4_156_520, "inception_next_tiny": 28_055_680,
          "inception_next_small": 49_374_016, "inception_next_base": 86_672_136}


@pytest.mark.parametrize("name", ["inception_next_atto", "inception_next_tiny"])
def test_logits_match_timm(name):
  error, scale = max_logit_error(name, PARAMS[name])
  assert scale > 0.1  # randomised norms keep the logits away from zero, so the bound means something
  assert error <= 1e-4 * scale, (error, scale)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_matches_timm(name):
  assert abstract_param_count(name) == PARAMS[name]


def test_layer_scale_keeps_its_timm_name():
  assert timm_key("params", "stages/layers_2/blocks/layers_5/gamma") == "stages.2.blocks.5.gamma"


def test_cli_converts_a_checkpoint(tmp_path):
  """`python -m inception_zoo.convert --timm inception_next_atto`: the two-layer MLP head's classes come
  from head.fc2, and the layer scales arrive unchanged."""
  state_dict = {k: v.numpy() for k, v in randomized_timm("inception_next_atto").state_dict().items()}
  path = tmp_path / "atto.safetensors"
  safetensors.numpy.save_file(state_dict, str(path))
  proc = subprocess.run([sys.executable, "-m", "inception_zoo.convert", "--timm", "inception_next_atto",
                         "--checkpoint", str(path), "--out", str(tmp_path / "w")],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  assert "4,156,520 parameters, 1000 classes" in proc.stdout
  loaded, _ = ckpt.load_weights(str(tmp_path / "w"))
  np.testing.assert_array_equal(loaded["params"]["stages"]["layers_3"]["blocks"]["layers_1"]["gamma"],
                                state_dict["stages.3.blocks.1.gamma"])


def test_feature_maps_follow_the_stages():
  model = create_model("inception_next_tiny")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  _, feats = jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  # The paper's tiny: stride 4/8/16/32 at widths 96/192/384/768; the MLP head widens 768 by 3.
  assert {k: v.shape for k, v in feats.items()} == {
      "C2": (1, 56, 56, 96), "C3": (1, 28, 28, 192), "C4": (1, 14, 14, 384), "C5": (1, 7, 7, 768),
      "pre_logits": (1, 2304)}
