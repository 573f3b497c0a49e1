"""Paper 24, DRCT: parity with spandrel's PyTorch DRCT (the official architecture) from seeded random
weights, the paper's parameter counts, the SR metrics against numpy oracles, the data helpers, the SR
trainer's exact resume, and the x2 claim on scikit-learn's sample photographs."""
import os
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from spandrel.architectures.DRCT import DRCT as TorchDRCT

from experiments import drct as drct_experiment
from inception_zoo.convert import timm_to_flax
from inception_zoo.errors import UserError
from inception_zoo.metrics import read_metrics
from inception_zoo.projects.drct import drct, run as drct_driver, sr


def test_parity_with_spandrel_odd_heads_and_padding():
  # 24 channels, growth 8, 3 and 6 heads: the dense layers (32, 40, 48, 56 channels) get 1, 2, 3, 1 and
  # 4, 2, 6, 4 heads. Two groups, 8x8 windows on a 24x24 map (shifted windows with masks), x4.
  torch.manual_seed(0)
  kw = dict(embed_dim=24, num_heads=(3, 6), window_size=8, mlp_ratio=2.0, upscale=4, gc=8)
  ref = TorchDRCT(img_size=24, depths=(6, 6), upsampler="pixelshuffle", **kw).eval()
  state_dict = {k: v.numpy() for k, v in ref.state_dict().items()}
  model = drct.DRCT(embed_dim=24, num_groups=2, num_heads=(3, 6), window_size=8, growth=8, upscale=4)
  # 20x20: ours reflect-pads to 24 and crops the output; spandrel does not pad, so it gets the padded
  # input and its output is cropped the same way.
  x = np.random.default_rng(0).uniform(size=(2, 20, 20, 3)).astype(np.float32)
  variables = timm_to_flax(state_dict, jax.eval_shape(model.init, jax.random.key(0), x))
  ours, feats = jax.jit(model.apply)(variables, x)
  padded = np.pad(x, ((0, 0), (0, 4), (0, 4), (0, 0)), mode="reflect")
  with torch.no_grad():
    theirs = ref(torch.from_numpy(padded).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()[:, :80, :80]
  assert ours.shape == (2, 80, 80, 3) and len(feats["groups"]) == 2
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)  # measured max |diff| 3.6e-7


def _spandrel_count(groups):
  arch = sys.modules[TorchDRCT.__module__]
  # Initialisers off: only shapes are counted (the 28M random draws would cost seconds).
  with mock.patch.object(arch, "trunc_normal_"), mock.patch("torch.nn.init.kaiming_uniform_"), \
       mock.patch("torch.nn.init.uniform_"):
    model = TorchDRCT(img_size=16, embed_dim=180, depths=(6,) * groups, num_heads=(6,) * groups,
                      window_size=16, mlp_ratio=2.0, upscale=4, upsampler="pixelshuffle", gc=32)
  return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, groups, paper_millions", [("drct", 6, 14.1), ("drct_l", 12, 27.6)])
def test_parameter_counts_match_spandrel_and_the_paper(name, groups, paper_millions):
  model = drct.create_drct(name, upscale=4)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
  assert count == _spandrel_count(groups)  # 14,139,579 and 27,580,719
  assert round(count / 1e6, 1) == paper_millions  # the official README's table (x4)


def test_bad_configurations_are_one_line_errors():
  x = jnp.zeros((1, 16, 16, 3))
  with pytest.raises(UserError, match=r"width 26 gets 4 heads"):  # 18 + 8 channels, 6 - 26 mod 6 heads
    jax.eval_shape(drct.DRCT(embed_dim=18, num_groups=1, num_heads=(6,), growth=8, window_size=8).init,
                   jax.random.key(0), x)
  with pytest.raises(UserError, match=r"upscale must be a power of 2 or 3; got 5"):
    jax.eval_shape(drct.create_drct("drct_tiny", upscale=5).init, jax.random.key(0), x)
  with pytest.raises(UserError, match=r"unknown DRCT variant 'drct_xl'"):
    drct.create_drct("drct_xl")


def test_psnr_and_ssim_on_y_match_numpy_oracles():
  rng = np.random.default_rng(0)
  hr = rng.uniform(size=(2, 24, 20, 3))
  out = np.clip(hr + rng.normal(0, 0.05, size=hr.shape), 0, 1)
  y = lambda im: 16.0 + 65.481 * im[..., 0] + 128.553 * im[..., 1] + 24.966 * im[..., 2]  # noqa: E731
  crop = 2
  d = (y(out) - y(hr))[:, crop:-crop, crop:-crop]
  psnr = 10 * np.log10(255.0 ** 2 / np.mean(d ** 2, axis=(1, 2)))
  np.testing.assert_allclose(sr.psnr_y(jnp.asarray(out), jnp.asarray(hr), crop), psnr, rtol=1e-5)

  # SSIM by its definition, window by window: Gaussian-weighted means, variances about the means and
  # covariance (Wang et al. 2004, Eq. 13-14), averaged over the valid positions.
  g = np.exp(-(np.arange(11) - 5.0) ** 2 / (2 * 1.5 ** 2))
  w = np.outer(g, g) / g.sum() ** 2
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  a, b = y(out)[0, crop:-crop, crop:-crop], y(hr)[0, crop:-crop, crop:-crop]
  values = []
  for i in range(a.shape[0] - 10):
    for j in range(a.shape[1] - 10):
      pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
      ma, mb = np.sum(w * pa), np.sum(w * pb)
      va, vb, cov = np.sum(w * (pa - ma) ** 2), np.sum(w * (pb - mb) ** 2), np.sum(w * (pa - ma) * (pb - mb))
      values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
  ssim = sr.ssim_y(jnp.asarray(out, jnp.float32), jnp.asarray(hr, jnp.float32), crop)
  np.testing.assert_allclose(ssim[0], np.mean(values), rtol=1e-4)
  np.testing.assert_allclose(sr.ssim_y(jnp.asarray(hr), jnp.asarray(hr), crop), 1.0, rtol=1e-6)
  assert np.all(np.asarray(ssim) < 1)


def test_quantize_downscale_and_patches():
  np.testing.assert_allclose(sr.quantize(jnp.array([-0.1, 0.5, 1.2, 0.1 / 255])), [0, 128 / 255, 1, 0],
                             atol=1e-7)
  flat = jnp.full((1, 8, 6, 3), 0.25)
  np.testing.assert_allclose(sr.downscale(flat, 2), jnp.full((1, 4, 3, 3), 0.25), atol=1e-6)
  with pytest.raises(UserError, match=r"not multiples of the scale 4"):
    sr.downscale(flat, 4)
  image = np.arange(10 * 12 * 1, dtype=np.float32).reshape(10, 12, 1)
  patches = sr.sample_patches(np.random.default_rng(0), [image], 4, 64)
  assert patches.shape == (64, 4, 4, 1)
  # Every patch is a crop of the image under one of the 8 symmetries, and all 8 occur.
  seen = set()
  for p in patches:
    base = p[..., 0]
    for k, sym in enumerate(_symmetries(base)):
      y, x = divmod(int(sym[0, 0]), 12)
      if np.array_equal(sym, image[y:y + 4, x:x + 4, 0]):
        seen.add(k)
        break
    else:
      raise AssertionError("a patch is not a crop of the image")
  assert len(seen) == 8


def _symmetries(p):
  """The 8 images of `p` under flips and transposes; applying the same one twice (or its inverse)
  gives back the crop."""
  out = []
  for t in (p, p.T):
    for q in (t, t[::-1], t[:, ::-1], t[::-1, ::-1]):
      out.append(q)
  return out


def test_load_image_dir_mod_crops_generated_pngs(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  pixels = {name: rng.integers(0, 256, size=shape, dtype=np.uint8)
            for name, shape in (("b.png", (13, 18, 3)), ("a.png", (16, 9, 3)))}
  for name, p in pixels.items():
    Image.fromarray(p).save(tmp_path / name)
  (tmp_path / "notes.txt").write_text("not an image")
  images = sr.load_image_dir(str(tmp_path), 4)
  assert list(images) == ["a.png", "b.png"]
  np.testing.assert_array_equal(images["a.png"], pixels["a.png"][:16, :8])  # uint8, as on disk
  assert images["b.png"].shape == (12, 16, 3)
  # uint8 images give the same patches and scores as their float32 copies.
  as_float = [sr.to_unit(im) for im in images.values()]
  np.testing.assert_array_equal(sr.sample_patches(np.random.default_rng(1), list(images.values()), 8, 6),
                                sr.sample_patches(np.random.default_rng(1), as_float, 8, 6))
  big = rng.integers(0, 256, size=(40, 36, 3), dtype=np.uint8)
  upscale = lambda params, lr: sr.bicubic_resize(lr, (lr.shape[1] * 2, lr.shape[2] * 2))  # noqa: E731
  scores = sr.evaluate(upscale, None, [big], 2)
  assert scores == sr.evaluate(upscale, None, [sr.to_unit(big)], 2) and np.isfinite(scores["ssim_y"])
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match=r"no images \(.png"):
    sr.load_image_dir(str(tmp_path / "empty"), 4)
  with pytest.raises(UserError, match=r"does not exist"):
    sr.load_image_dir(str(tmp_path / "missing"), 4)


def test_settings_and_unknown_setting():
  full = drct_experiment.get_config()
  assert (full.model, full.scale, full.patch_size, full.batch_size, full.schedule.base_lr) == \
      ("drct", 4, 64, 32, 2e-4)
  assert drct_experiment.get_config("drct_l").model == "drct_l"
  with pytest.raises(UserError, match=r"unknown setting 'x8' \(runlocal, "):
    drct_experiment.get_config("x8")


def test_resumed_training_ends_where_an_uninterrupted_run_does(tmp_path):
  # The claim's own setting cut to 4 steps: its schedule does not depend on total_steps, so the train
  # step is the claim test's compiled program (a compile-cache hit when both run).
  config = drct_experiment.get_config("runlocal")
  config.update(total_steps=4, log_every=2, eval_every=0)
  images, eval_sets = drct_driver.load_data(config)
  model = drct.create_drct(config.model, upscale=config.scale)
  whole, result = sr.train(config, str(tmp_path / "whole"), model, images, eval_sets)
  half = config.copy_and_resolve_references()
  half.total_steps = 2
  sr.train(half, str(tmp_path / "parts"), model, images, eval_sets)  # saves its last step, 2
  parts, resumed = sr.train(config, str(tmp_path / "parts"), model, images, eval_sets)
  assert int(parts.step) == 4
  jax.tree.map(np.testing.assert_array_equal, whole.params, parts.params)
  jax.tree.map(np.testing.assert_array_equal, whole.opt_state, parts.opt_state)
  assert resumed == result and set(result) == {f"sample_images/{k}" for k in (
      "psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")}
  logged = [r["step"] for r in read_metrics(str(tmp_path / "parts")) if "train/loss" in r]
  assert logged == [2, 4]
  other_seed = config.copy_and_resolve_references()
  other_seed.seed = 1  # other patches would come next
  with pytest.raises(UserError, match="trained with seed 0; resuming with 1"):
    sr.train(other_seed, str(tmp_path / "parts"), model, images, eval_sets)


@pytest.mark.slow
def test_claim_tiny_drct_beats_bicubic_x2(tmp_path):
  result = drct_experiment.main(["--config=runlocal", f"--workdir={tmp_path}"])
  # Measured: PSNR-Y 24.36 vs bicubic 24.18 dB (+0.18), SSIM-Y 0.774 vs 0.736 (two held-out 128x128 crops).
  assert result["sample_images/psnr_gain"] > 0.1
  assert result["sample_images/ssim_y"] > result["sample_images/bicubic_ssim_y"] + 0.02
  assert (tmp_path / "drct_sr.png").exists()
  rows = read_metrics(str(tmp_path))
  assert [r["step"] for r in rows if "sample_images/psnr_y" in r] == [250, 500, 750, 1000, 1250]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert losses[-1] < losses[0]  # mean L1 of steps 1-100 vs 1151-1250
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints")) == [500, 1000, 1250]
