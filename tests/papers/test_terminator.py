"""Paper 26, Terminator: FFT convolution against direct convolution and scipy, the HyperZ.Z.W operators
against numpy, standardisation, shapes, and the digits claim (trains stably without residuals)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
import tensorflow_datasets as tfds

from experiments import terminator as terminator_experiment
from inception_zoo.errors import UserError
from inception_zoo.projects.terminator import run as terminator_driver, terminator


def _scipy_same(z, k):
  """Per sample and channel, scipy's zero-padded 'same' convolution (the oracle)."""
  k = np.broadcast_to(k, (z.shape[0], *k.shape[1:]))
  return np.stack([np.stack([scipy.signal.convolve(z[n, ..., c], k[n, ..., c], mode="same")
                             for c in range(z.shape[-1])], -1) for n in range(z.shape[0])])


@pytest.mark.parametrize("z_shape, k_shape", [((3, 11, 4), (3, 4, 4)), ((3, 16, 2), (1, 16, 2)),
                                              ((2, 8, 7, 3), (2, 3, 4, 3)), ((2, 8, 8, 2), (2, 8, 8, 2))])
def test_fft_convolution_equals_direct_convolution(z_shape, k_shape):
  rng = np.random.default_rng(0)
  z, k = rng.normal(size=z_shape).astype(np.float32), rng.normal(size=k_shape).astype(np.float32)
  fft_out, direct_out = jax.jit(lambda a, b: (terminator.fft_conv(a, b), terminator.depthwise_conv(a, b)))(z, k)
  expected = _scipy_same(z, k)
  np.testing.assert_allclose(fft_out, expected, atol=2e-5 * np.abs(expected).max())
  np.testing.assert_allclose(direct_out, expected, atol=2e-5 * np.abs(expected).max())


def test_hyper_zzw_operators_and_standardisation():
  rng = np.random.default_rng(1)
  z, w = rng.normal(size=(2, 6, 6, 3)).astype(np.float32), rng.normal(size=(6, 6, 3)).astype(np.float32)
  w_local = rng.normal(size=(3, 3, 3)).astype(np.float32)
  g, local, std = jax.jit(lambda a: (terminator.hyper_zzw_global(a, w), terminator.hyper_zzw_local(a, w_local),
                                     terminator.instance_standardise(a)))(z)
  np.testing.assert_allclose(g, _scipy_same(z, (z * w)), rtol=1e-4, atol=1e-4)  # Z conv (Z * W)
  # The local context: Z resized to the kernel's 3x3 (antialiased linear filter).
  context = np.asarray(jax.image.resize(z, (2, 3, 3, 3), "linear", antialias=True))
  np.testing.assert_allclose(local, _scipy_same(z, context * w_local), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(std).mean((1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(std).std((1, 2)), 1.0, atol=1e-3)
  grid = terminator.coordinate_grid((3, 5))
  assert grid.shape == (15, 2) and float(grid.min()) == -1.0 and float(grid.max()) == 1.0
  assert terminator.SlowNet(4, (5,)).init_with_output(jax.random.key(0))[0].shape == (5, 4)


def test_models_shapes_features_and_errors():
  for shape in ((2, 64, 1), (2, 8, 8, 1)):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    for model in (terminator.Terminator(10, width=8), terminator.PlainCNN(10, width=8)):
      variables = jax.eval_shape(model.init, jax.random.key(0), x)
      logits, features = jax.eval_shape(lambda v, a, m=model: m.apply(v, a), variables, x)
      assert logits.shape == (2, 10) and sorted(features) == ["block0", "block1"]
      assert features["block1"].shape == (*shape[:-1], 8)
  with pytest.raises(UserError, match="sequences"):
    terminator.Terminator().init(jax.random.key(0), jnp.zeros((2, 4, 4, 4, 1)))
  with pytest.raises(UserError, match="exceed"):
    terminator.Terminator(local_sizes=(9,)).init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
  with pytest.raises(UserError, match="unknown setting 'x'"):
    terminator_experiment.get_config("x")


def test_sequential_mnist_is_the_row_major_raster_and_the_full_setting_runs(tmp_path):
  smnist, pmnist = terminator_experiment.get_config(), terminator_experiment.get_config("pmnist")
  assert (smnist.data, smnist.views, smnist.permute, pmnist.permute) == ("tfds:mnist", ("1d",), False, True)
  with tfds.testing.mock_data(num_examples=6):
    source = tfds.data_source("mnist", split="test")
    images = np.stack([np.asarray(source[i]["image"]) for i in range(6)])[..., 0]  # (6, 28, 28) uint8
    labels = np.asarray([source[i]["label"] for i in range(6)])
    views, y = terminator_driver.load_views(smnist, "test")
    permuted, _ = terminator_driver.load_views(pmnist, "test")
    # The permuted full setting (sMNIST's path plus the permutation), 2 steps of a width-8, 1-block
    # Terminator on the 784-step sequences, evaluated in two chunks.
    r = terminator_experiment.main(["--config=pmnist", f"--workdir={tmp_path}", "--config.width=8",
                                    "--config.depth=1", "--config.batch_size=4", "--config.total_steps=2",
                                    "--config.log_every=1", "--config.eval_batch_size=4"])
  seq = views["1d"]
  assert seq.shape == (6, 784, 1) and seq.dtype == np.float32 and np.array_equal(y, labels)
  for n, row, col in ((0, 0, 5), (1, 3, 27), (5, 27, 0), (2, 14, 14)):  # pixel (r, c) is step 28 r + c
    assert seq[n, 28 * row + col, 0] == np.float32(images[n, row, col] / 255.0)
  perm = terminator_driver.pixel_permutation(pmnist)
  assert sorted(perm.tolist()) == list(range(784)) and not np.array_equal(perm, np.arange(784))
  np.testing.assert_array_equal(permuted["1d"][:, :, 0], seq[:, perm, 0])  # one permutation for all images
  assert sorted(k for k in r if k.endswith("/accuracy")) == ["terminator_1d/accuracy"]  # no CNN baseline
  assert np.isfinite(r["terminator_1d/loss_last"]) and 0 < r["terminator_1d/block0/std"] < 2, r


@pytest.mark.slow
def test_terminator_trains_stably_without_residuals(tmp_path):
  # Zhang 2024, abstract / Sec. 5: stable zero-mean features, training converges, no residuals.
  # Measured on 360 held-out digits after 150 steps of batch 64: Terminator 1D accuracy 0.856 (loss
  # 2.41 -> 1.22), 2D 0.919 (2.39 -> 0.96); per-layer |mean| 0.000 and std 0.99-1.00 in both blocks.
  # Same-size plain CNN (reported, not asserted): 1D 0.256, 2D 0.664; its block-2 std 0.85 / 3.1.
  r = terminator_experiment.main(["--config=runlocal", f"--workdir={tmp_path}"])
  for view in ("1d", "2d"):
    run = f"terminator_{view}"
    assert r[f"{run}/loss_last"] < 0.7 * r[f"{run}/loss_first"], r  # the loss falls
    assert r[f"{run}/accuracy"] > 0.7, r  # chance is 0.1
    for block in ("block0", "block1"):
      assert r[f"{run}/{block}/abs_mean"] < 0.05 and abs(r[f"{run}/{block}/std"] - 1.0) < 0.1, (block, r)
    assert abs(r[f"{run}/params"] - r[f"cnn_{view}/params"]) < 0.05 * r[f"{run}/params"]  # same size
  assert (tmp_path / "terminator.png").exists()
