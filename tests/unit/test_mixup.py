"""Mixup/CutMix in the train step: equal to timm's Mixup for the same draws, and off means untouched."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import timm.data.mixup as timm_mixup
import torch

from experiments import inception_next
from inception_zoo import UserError
from inception_zoo.train import classification, mixup, optim
from inception_zoo.train.state import make_init, step_rng


def batch(n=6, h=16, w=24, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, h, w, 3)).astype(np.float32),
          rng.integers(0, num_classes, n).astype(np.int32))


@pytest.mark.parametrize("lam, use_cutmix, center", [
    (0.37, False, (0, 0)),    # Mixup
    (0.62, True, (5, 20)),    # CutMix, box clipped by the right border: lam corrected
    (0.23, True, (8, 12)),    # CutMix, box inside the image
    (1.0, False, (3, 3)),     # no mixing this batch (prob not met)
])
def test_mixed_images_and_targets_equal_timms(lam, use_cutmix, center, monkeypatch):
  images, labels = batch()
  m = timm_mixup.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch",
                       label_smoothing=0.1, num_classes=10)
  lam32 = float(np.float32(lam))
  monkeypatch.setattr(m, "_params_per_batch", lambda: (lam32, use_cutmix))
  draws = iter(center)  # rand_bbox draws the centre row, then column, with np.random.randint
  monkeypatch.setattr(timm_mixup.np.random, "randint", lambda *a, **k: next(draws))
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  x_timm, y_timm = m(x, torch.from_numpy(labels).long())

  params = mixup.MixParams(jnp.float32(lam), jnp.asarray(use_cutmix), jnp.array(center, jnp.int32))
  x_ours, y_ours = jax.jit(mixup.mix)(images, mixup.soft_targets(labels, 10, 0.1), params)
  np.testing.assert_allclose(x_ours, x_timm.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(y_ours, y_timm.numpy(), rtol=1e-6, atol=1e-7)
  if use_cutmix:  # whole pixels move, nothing is blended
    moved = np.any(x_ours != images, axis=(0, 3))
    assert moved.any() and np.array_equal(x_ours[:, moved], images[::-1][:, moved])


def test_draws_follow_timms_batch_mode():
  """alpha 0.8 / 1.0, switch 0.5: half the batches CutMix with lam ~ Beta(1, 1), half Mixup with
  lam ~ Beta(0.8, 0.8); prob is the share of batches mixed at all; centres uniform over the image."""
  keys = jax.random.split(jax.random.key(0), 8000)

  def draws(mixup_alpha, cutmix_alpha, prob):
    fn = jax.jit(jax.vmap(lambda k: mixup.sample(k, (16, 24), mixup_alpha, cutmix_alpha, prob, 0.5)))
    return jax.tree.map(np.asarray, fn(keys))

  p = draws(0.8, 1.0, 1.0)
  cut, lam = p.use_cutmix, p.lam
  assert abs(cut.mean() - 0.5) < 0.03  # binomial sd 0.0056
  # Beta(a, a) has mean 0.5 and variance 1 / (4 (2a + 1)): 1/12 for a = 1, 0.0962 for a = 0.8.
  assert abs(lam[cut].mean() - 0.5) < 0.02 and abs(lam[cut].var() - 1 / 12) < 0.006
  assert abs(lam[~cut].mean() - 0.5) < 0.02 and abs(lam[~cut].var() - 1 / 10.4) < 0.006
  assert p.center[:, 0].min() == 0 and p.center[:, 0].max() == 15 and p.center[:, 1].max() == 23
  some = draws(0.8, 1.0, 0.3)
  assert abs(np.mean(some.lam < 1) - 0.3) < 0.03 and not np.any(some.use_cutmix & (some.lam == 1))
  assert np.all(draws(0.0, 1.0, 1.0).use_cutmix) and not np.any(draws(0.8, 0.0, 1.0).use_cutmix)


class TinyNet(nn.Module):
  """Conv, BatchNorm, dropout, head: enough for the step to use batch statistics and the RNG."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, *, train):
    x = nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x))
    x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2))), {}


def one_step(config, images, labels):
  model = TinyNet()
  schedule = optim.make_schedule(config, steps_per_epoch=10, total_steps=10)
  tx = optim.make_optimizer(config, schedule)
  state = make_init(model, tx, images.shape[1:])(jax.random.key(0))
  step = jax.jit(classification.make_train_step(model, tx, schedule, config))
  return model, state, step(state, {"image": images, "label": labels})


def test_step_without_mixing_is_unchanged():
  config = classification.base_config()
  config.label_smoothing = 0.1
  images, labels = batch(8)
  model, state, (off, off_metrics) = one_step(config, images, labels)
  # The loss is the label-smoothed cross-entropy of the batch as given, with the step's dropout key.
  (logits, _), _ = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images,
                               train=True, mutable=["batch_stats"], rngs={"dropout": step_rng(state)})
  expected = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, 10), 0.1))
  np.testing.assert_allclose(off_metrics["loss"], expected.mean(), rtol=1e-6)
  # Mixing switched on but never drawn (prob 0) is the same step, bit for bit; drawn, it is not.
  config.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.0)
  _, _, (never, _) = one_step(config, images, labels)
  for a, b in zip(jax.tree.leaves(off), jax.tree.leaves(never)):
    np.testing.assert_array_equal(a, b)
  config.mixup.prob = 1.0
  _, _, (_, mixed_metrics) = one_step(config, images, labels)
  assert not np.isclose(mixed_metrics["loss"], off_metrics["loss"])


def test_bad_mixup_config_is_a_one_line_error():
  config = classification.base_config()
  config.mixup.mixup_alpha = -1.0
  with pytest.raises(UserError, match="config.mixup needs alphas >= 0"):
    mixup.enabled(config)


def test_paper_recipe_trains_on_digits(tmp_path):
  """InceptionNeXt's CPU setting with the ImageNet recipe's ops switched on (RandAugment, random
  erasing, Mixup 0.8 / CutMix 1.0, stochastic depth): a few steps run and the loss stays finite."""
  full = inception_next.get_config("tiny")
  config = inception_next.get_config("runlocal")
  config.mixup = full.mixup
  config.input.pp_train = ("gray_to_rgb|resize(32)|randaugment('rand-m9-mstd0.5-inc1')|"
                           "value_range(-1, 1)|random_erase(0.25)")
  config.model.drop_path_rate = 0.1
  config.update(total_steps=4, log_every=2, mesh=dict(data=1, fsdp=1))
  result = classification.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result["eval/loss"])
