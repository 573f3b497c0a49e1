"""Swin Transformer V2 equals timm's `swinv2_*`: eval-mode logits at the native 256 px (seeded random
weights; LayerNorms, biases and the attention logit scales randomised, see timm_helpers), the same
weights moved to a larger window and a larger image (the paper's transfer, Sec. 3.3), the derived
buffers, parameter counts, the converter's command line, and the stage feature maps."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import timm
import torch
from timm_helpers import abstract_param_count, max_logit_error, randomized_timm

from inception_zoo import UserError, ckpt, create_model
from inception_zoo.convert import convert_timm
from inception_zoo.layers import window as window_ops

PARAMS = {"swinv2_tiny_window8_256": 28_347_154, "swinv2_tiny_window16_256": 28_347_154,
          "swinv2_small_window8_256": 49_728_418, "swinv2_small_window16_256": 49_728_418,
          "swinv2_base_window8_256": 87_918_816, "swinv2_base_window16_256": 87_918_816}


def test_logits_match_timm():
  error, scale = max_logit_error("swinv2_tiny_window8_256", PARAMS["swinv2_tiny_window8_256"], size=256)
  assert scale > 0.1  # randomised norms keep the logits away from zero, so the bound means something
  assert error <= 1e-4 * scale, (error, scale)


@pytest.mark.parametrize("options", [
    # Sec. 3.3: window 8 -> 16 at 256 px, the coordinates kept at the 8x8 window's scale; stages 3-4
    # (16x16 and 8x8 tokens) then attend over their whole map without shifting.
    dict(window_size=16, pretrained_window_sizes=(8, 8, 8, 8)),
    # 256 -> 384 px with the same window: stage 4's 12x12 tokens are padded to 16x16 and shifted.
    dict(img_size=384),
], ids=["window16", "384px"])
def test_window8_weights_transfer_like_timm(options):
  """swinv2_tiny_window8_256's weights load unchanged into a model with another window or image size
  (nothing in them depends on either), and give timm's logits for the same change."""
  trained = randomized_timm("swinv2_tiny_window8_256")
  state_dict = {k: v.numpy() for k, v in trained.state_dict().items()}
  reference = timm.create_model("swinv2_tiny_window8_256", **options).eval()
  reference.load_state_dict(trained.state_dict())  # strict: same tensors, new derived buffers
  model, variables = convert_timm("swinv2_tiny_window8_256", state_dict, **options)
  size = model.img_size
  x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    ref = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  out, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  assert np.all(np.isfinite(out))
  scale = float(np.abs(ref).max())
  assert scale > 0.1
  assert float(np.abs(np.asarray(out) - ref).max()) <= 1e-4 * scale


@pytest.mark.parametrize("window, pretrained", [(8, 0), (16, 8), (3, 0)])
def test_relative_coordinates_and_index_equal_timm_buffers(window, pretrained):
  attn = timm.models.swin_transformer_v2.WindowAttention(
      32, (window, window), 2, pretrained_window_size=(pretrained, pretrained))
  np.testing.assert_allclose(window_ops.relative_coords_table((window,) * 2, (pretrained,) * 2),
                             attn.relative_coords_table[0].numpy(), rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(window_ops.relative_position_index((window,) * 2),
                                attn.relative_position_index.numpy())


@pytest.mark.parametrize("size, window", [(16, 4), (12, 8)])  # 12 tokens, window 8: padded to 16
def test_shift_mask_equals_timm_buffer(size, window):
  block = timm.models.swin_transformer_v2.SwinTransformerV2Block(
      32, (size, size), 2, window_size=window, shift_size=window // 2)
  padded = -(-size // window) * window
  np.testing.assert_array_equal(
      window_ops.shift_mask((padded, padded), (window, window), (window // 2, window // 2)),
      block.attn_mask.numpy())


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_count_matches_timm(name):
  with torch.device("meta"):  # shapes only: nothing is allocated or initialised
    reference = timm.create_model(name)
  assert abstract_param_count(name, size=256) == PARAMS[name] == sum(
      p.numel() for p in reference.parameters())


def test_cli_converts_a_checkpoint(tmp_path):
  """`python -m inception_zoo.convert --timm swinv2_tiny_window8_256` on a checkpoint that also holds
  the derived buffers (as checkpoints saved while they were persistent do): they are skipped by rule,
  every parameter is used."""
  reference = randomized_timm("swinv2_tiny_window8_256")
  state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
  derived = {k: v.numpy() for k, v in reference.named_buffers()
             if k.endswith(("relative_coords_table", "relative_position_index", "attn_mask"))}
  assert len(derived) == 12 + 12 + 5  # 12 blocks; shift masks in the odd blocks of stages 1-3
  path = tmp_path / "swinv2.safetensors"
  safetensors.numpy.save_file({**state_dict, **derived}, str(path))
  proc = subprocess.run([sys.executable, "-m", "inception_zoo.convert", "--timm",
                         "swinv2_tiny_window8_256", "--checkpoint", str(path), "--out", str(tmp_path / "w")],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  assert "28,347,154 parameters, 1000 classes" in proc.stdout
  loaded, _ = ckpt.load_weights(str(tmp_path / "w"))
  attn = loaded["params"]["layers"]["layers_2"]["blocks"]["layers_5"]["attn"]
  np.testing.assert_array_equal(attn["logit_scale"], state_dict["layers.2.blocks.5.attn.logit_scale"])
  np.testing.assert_array_equal(attn["cpb_mlp"]["layers_2"]["kernel"],
                                state_dict["layers.2.blocks.5.attn.cpb_mlp.2.weight"].T)


def test_feature_maps_follow_the_stages():
  model = create_model("swinv2_tiny_window8_256")
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)))
  _, feats = jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32))
  # SwinV2-T: stride 4/8/16/32 at widths 96/192/384/768; pre_logits is the pooled final LayerNorm.
  assert {k: v.shape for k, v in feats.items()} == {
      "C2": (1, 64, 64, 96), "C3": (1, 32, 32, 192), "C4": (1, 16, 16, 384), "C5": (1, 8, 8, 768),
      "pre_logits": (1, 768)}


@pytest.mark.parametrize("options, size, message", [
    ({}, 224, r"built for 256x256 images \(option img_size\); got 224x224"),
    ({"num_heads": (3, 6)}, 256, r"need one entry per stage of depths \(2, 2, 6, 2\)"),
    ({"pretrained_window_sizes": (12,)}, 256, r"need one entry per stage"),
    ({"embed_dim": 100}, 256, r"widths 100 x 2\^i do not divide into num_heads \(3, 6, 12, 24\)"),
])
def test_bad_input_or_options_are_one_line_errors(options, size, message):
  model = create_model("swinv2_tiny_window8_256", **options)
  with pytest.raises(UserError, match=message):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


def test_gradients_are_finite_where_windows_pad_the_map():
  """24 px in 2x2 patches with 4x4 windows: stage 2 pads its 6x6 tokens to 8x8 with zero tokens,
  whose keys have zero norm in the cosine attention."""
  model = create_model("swinv2_tiny_window8_256", num_classes=3, img_size=24, patch_size=2,
                       window_size=4, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 1, 2),
                       post_norm_init=1.0)
  x = jax.random.normal(jax.random.key(0), (2, 24, 24, 3))

  @jax.jit  # init and gradient in one program: one compile
  def grads():
    params = model.init(jax.random.key(1), x)["params"]
    return jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x)[0] ** 2))(params)

  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads()))
