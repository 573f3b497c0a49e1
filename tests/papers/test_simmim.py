"""SimMIM (Xie et al. 2022): the masks, the loss, the head against PyTorch, pre-training on the CPU
setting, and fine-tuning a classifier from its weights."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from experiments import simmim_swinv2, swinv2
from inception_zoo import UserError, ckpt, create_model, sharding
from inception_zoo.layers import pixel_shuffle
from inception_zoo.metrics import read_metrics
from inception_zoo.projects.simmim import task as simmim
from inception_zoo.projects.simmim.simmim import masked_l1, random_masks, simmim as build_simmim
from inception_zoo.pytree import path_str
from inception_zoo.train import classification, optim
from inception_zoo.train.state import make_init, restore_or_init


def test_masks_have_the_exact_ratio_follow_the_blocks_and_the_key():
  # The paper's setting: 192 px, 32 px mask patches, 4 px model patches -> a 48x48 grid of 6x6 blocks.
  masks = np.asarray(random_masks(jax.random.key(0), 16, 192, 32, 4, 0.6))
  assert masks.shape == (16, 48, 48) and masks.dtype == bool
  blocks = masks.reshape(16, 6, 8, 6, 8)
  # Each 8x8 group of patches (one 32 px block) is all masked or all visible.
  assert np.all(blocks.all(axis=(2, 4)) == blocks.any(axis=(2, 4)))
  assert np.all(blocks[:, :, 0, :, 0].sum(axis=(1, 2)) == math.ceil(36 * 0.6))  # 22 of 36
  np.testing.assert_allclose(masks.mean(axis=(1, 2)), 22 / 36)
  assert len({m.tobytes() for m in masks}) == 16  # rows differ
  np.testing.assert_array_equal(masks, random_masks(jax.random.key(0), 16, 192, 32, 4, 0.6))
  assert not np.array_equal(masks, random_masks(jax.random.key(1), 16, 192, 32, 4, 0.6))
  with pytest.raises(UserError, match="mask_patch_size 12 must divide the image size 32"):
    random_masks(jax.random.key(0), 1, 32, 12, 4, 0.6)


def test_loss_counts_masked_pixels_only_and_matches_the_official_formula():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
  pred = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
  mask = np.asarray(random_masks(jax.random.key(0), 2, 32, 8, 4, 0.6))
  loss = float(masked_l1(images, pred, mask, 4))
  # The official SimMIM.forward on NCHW tensors.
  x, x_rec = torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(pred).permute(0, 3, 1, 2)
  m = torch.from_numpy(mask.copy()).repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1).float()
  official = ((torch.abs(x - x_rec) * m).sum() / (m.sum() + 1e-5) / 3).item()
  assert loss == pytest.approx(official, rel=1e-5)
  pixels = np.repeat(np.repeat(mask, 4, 1), 4, 2)[..., None]
  changed = np.where(pixels, pred, pred + 100.0)  # only unmasked predictions move
  assert float(masked_l1(images, changed, mask, 4)) == pytest.approx(loss, rel=1e-6)
  assert float(masked_l1(images, np.where(pixels, pred + 1.0, pred), mask, 4)) != pytest.approx(loss)


def test_pixel_shuffle_is_pytorchs():
  x = np.random.default_rng(0).normal(size=(2, 3, 4, 8 * 8 * 3)).astype(np.float32)
  expected = torch.nn.PixelShuffle(8)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
  np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), 8)), expected.numpy())


def test_mask_token_replaces_only_masked_patches_and_the_encoder_keeps_classifier_paths():
  options = dict(img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2))
  model = build_simmim("swinv2_tiny_window8_256", **options)
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(1), images)
  classifier = create_model("swinv2_tiny_window8_256", num_classes=10, **options)
  paths = {path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(
      jax.eval_shape(classifier.init, jax.random.key(1), images))[0]}
  mine = {path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(variables)[0]}
  assert {p.split("/")[1] for p in mine - paths} == set(ckpt.PRETRAINING_ONLY)
  assert {p for p in paths - mine} == {"params/head/fc/kernel", "params/head/fc/bias"}
  apply = jax.jit(lambda v, mask: model.apply(v, images, mask)[0])
  none = jnp.zeros((2, 8, 8), bool)
  unmasked, masked = apply(variables, none), apply(variables, none.at[:, :2, :2].set(True))
  assert masked.shape == images.shape and not np.allclose(masked, unmasked)
  # The token is what masked patches see: another token changes the reconstruction only then.
  other = dict(variables, params={**variables["params"], "mask_token": variables["params"]["mask_token"] + 1})
  np.testing.assert_array_equal(apply(other, none), unmasked)
  assert not np.allclose(apply(other, none.at[:, :2, :2].set(True)), masked)


def test_merge_weights_drops_pretraining_modules_by_rule_and_refuses_other_extras():
  fresh = {"params": {"body": {"kernel": np.zeros((3, 4))}, "head": {"fc": {"kernel": np.zeros((4, 10))}}}}
  loaded = {"params": {"body": {"kernel": np.ones((3, 4))}, "mask_token": np.ones(4),
                       "decoder": {"kernel": np.ones((1, 1, 4, 12))}}}
  merged, reset = ckpt.merge_weights(fresh, loaded, head="head")
  assert reset == ["params/head/fc/kernel"]
  np.testing.assert_array_equal(merged["params"]["body"]["kernel"], 1)
  loaded["params"]["projector"] = {"kernel": np.ones((4, 4))}
  with pytest.raises(UserError, match="loaded weights have 'params/projector/kernel', which the model lacks"):
    ckpt.merge_weights(fresh, loaded, head="head")


def test_pretraining_lowers_the_held_out_loss_and_finetuning_starts_from_the_encoder(tmp_path):
  config = simmim_swinv2.get_config("runlocal")
  config.mesh.data = 1
  config.total_steps = 40
  config.log_every = 20
  pre = str(tmp_path / "pre")
  before = classification.Setup(config, pre, simmim.SIMMIM)  # the same initial state as the run's
  start = before.evaluate()["eval/masked_l1"]
  before.checkpoints.close()
  end = simmim.train_and_evaluate(config, pre)["eval/masked_l1"]
  losses = [r["train/loss"] for r in read_metrics(pre) if "train/loss" in r]
  print(f"held-out masked L1 {start:.4f} -> {end:.4f}; train {losses}")
  assert end < 0.8 * start and losses[-1] < losses[0]

  tune = swinv2.get_config("runlocal")  # the documented fine-tuning: experiments.swinv2 with init_from
  tune.mesh.data = 1
  tune.init_from = pre
  tune.total_steps = 2
  tune.log_every = 1
  # The state a fine-tuning run starts from (what train_and_evaluate builds first).
  model = classification.build_classifier(tune, 10)
  tx = optim.make_optimizer(tune, optax.constant_schedule(0.0))
  checkpoints = ckpt.Checkpoints(str(tmp_path / "tune"))
  state, _, _ = restore_or_init(tune, model, tx, (32, 32, 3), sharding.make_mesh(tune.mesh.to_dict()),
                                checkpoints, head="head")
  checkpoints.close()
  loaded, _ = ckpt.load_weights(pre)
  encoder = {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(loaded["params"])[0]}
  assert "mask_token" in encoder and "decoder/kernel" in encoder
  params = jax.device_get(state.params)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_str(path)
    if not name.startswith("head/"):
      np.testing.assert_array_equal(leaf, encoder[name], err_msg=name)
  fresh = jax.jit(make_init(model, tx, (32, 32, 3)))(jax.random.key(tune.seed))
  np.testing.assert_array_equal(params["head"]["fc"]["kernel"], fresh.params["head"]["fc"]["kernel"])
  result = classification.train_and_evaluate(tune, str(tmp_path / "tune"))
  assert 0.0 <= result["eval/top1"] <= 1.0
  assert all(np.isfinite(r["train/loss"]) for r in read_metrics(str(tmp_path / "tune")) if "train/loss" in r)
