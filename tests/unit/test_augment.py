"""RandAugment and random erasing (per-example pp ops) against timm's implementations."""
import numpy as np
import pytest
import timm.data.auto_augment as timm_aa
import timm.data.random_erasing as timm_re
import torch
from PIL import Image

from inception_zoo import UserError
from inception_zoo.data import augment, pp


def photo(h=40, w=48, seed=0):
  """A smooth gradient with noise in 40..210: autocontrast, equalize and solarize all change it."""
  y, x = np.mgrid[:h, :w]
  base = np.stack([40 + 120 * x / w, 40 + 120 * y / h, 100 + 60 * np.sin(x / 5.0)], -1)
  noise = np.random.default_rng(seed).integers(0, 50, (h, w, 3))
  return np.clip(base + noise, 0, 255).astype(np.uint8)


class NumpyRandom:
  """Python's `random` API drawing from a numpy Generator, so timm consumes the same numbers in the
  same order as our ops do."""

  def __init__(self, seed):
    self.rng = np.random.default_rng(seed)

  def random(self):
    return self.rng.uniform()

  def uniform(self, a, b):
    return self.rng.uniform(a, b)

  def randint(self, a, b):
    return int(self.rng.integers(a, b + 1))


@pytest.mark.parametrize("sign", [1, -1])
def test_magnitude_to_argument_is_timms(sign, monkeypatch):
  # timm's _randomly_negate flips the sign when random.random() > 0.5.
  monkeypatch.setattr(timm_aa.random, "random", lambda: 0.9 if sign < 0 else 0.1)
  for name in set(augment.RAND_OPS + augment.RAND_INCREASING_OPS):
    ours = augment.LEVEL_TO_ARG[name]
    theirs = timm_aa.LEVEL_TO_ARG[name]
    assert (ours is None) == (theirs is None), name
    for level in np.arange(0.0, 10.01, 0.25) if ours else ():
      assert ours(level, sign) == pytest.approx(theirs(level, timm_aa._HPARAMS_DEFAULT)[0]), (name, level)


@pytest.mark.parametrize("resample", [Image.BILINEAR, Image.BICUBIC])
def test_every_operation_equals_timms(resample, monkeypatch):
  img = Image.fromarray(photo())
  hparams = dict(timm_aa._HPARAMS_DEFAULT, img_mean=augment.IMAGENET_MEAN_U8)
  for name in set(augment.RAND_OPS + augment.RAND_INCREASING_OPS):
    for level in (3.0, 9.0, 10.0):
      for sign in (1, -1):
        monkeypatch.setattr(timm_aa.random, "random", lambda: 0.9 if sign < 0 else 0.1)
        args = timm_aa.LEVEL_TO_ARG[name](level, hparams) if timm_aa.LEVEL_TO_ARG[name] else ()
        theirs = timm_aa.NAME_TO_OP[name](img, *args, fillcolor=augment.IMAGENET_MEAN_U8,
                                          resample=resample)
        ours = augment.apply_op(img, name, level, sign, resample)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), err_msg=f"{name} {level} {sign}")
  assert not np.array_equal(np.asarray(augment.apply_op(img, "Equalize", 9.0)), np.asarray(img))


def test_rand_m9_mstd05_inc1_draws():
  """timm's 'rand-m9-mstd0.5-inc1': two layers from the 15 increasing operations, uniformly, each kept
  with probability 0.5, magnitude N(9, 0.5) clipped to 10, random sign and bilinear/bicubic."""
  ra = augment.RandAugment("rand-m9-mstd0.5-inc1")
  rng = np.random.default_rng(0)
  draws = [ra.sample(rng) for _ in range(20_000)]
  ops = [op for d in draws for op in d]
  # 40,000 layers, each kept with p 0.5: binomial sd 100, so 5 sd is 500.
  assert abs(len(ops) - 20_000) < 500
  names, levels, signs, resamples = zip(*ops)
  counts = np.array([names.count(n) for n in augment.RAND_INCREASING_OPS])
  assert set(names) == set(augment.RAND_INCREASING_OPS)
  assert counts.min() > 0.85 * len(ops) / 15 and counts.max() < 1.15 * len(ops) / 15
  levels = np.array(levels)
  assert levels.max() == 10.0 and levels.min() > 7.0
  # Clipping N(9, 0.5) at 10 lowers its mean by 0.004 and its sd a little.
  assert abs(levels.mean() - 9.0) < 0.02 and 0.45 < levels.std() < 0.5
  assert abs(np.mean(np.array(signs) == 1) - 0.5) < 0.02
  assert abs(np.mean(np.array(resamples) == Image.BICUBIC) - 0.5) < 0.02


def test_randaugment_op_replays_with_the_same_generator():
  fn = pp.build("randaugment('rand-m9-mstd0.5-inc1')")
  ex = {"image": photo(), "label": 1}
  a, b = (fn(ex, np.random.default_rng(5))["image"] for _ in range(2))
  np.testing.assert_array_equal(a, b)
  assert a.shape == (40, 48, 3) and a.dtype == np.uint8
  others = [fn(ex, np.random.default_rng(s))["image"] for s in range(8)]
  assert len({o.tobytes() for o in others}) > 4
  gray = fn({"image": photo()[..., :1]}, np.random.default_rng(5))["image"]
  assert gray.shape == (40, 48, 1)


@pytest.mark.parametrize("spec, message", [
    ("rand-m11", r"magnitude 11 is outside \[0, 10\]"),
    ("rand-m9-x3", "unknown section 'x3'"),
    ("rand-m9x", "bad value '9x' for 'm'"),
    ("auto-m9", "must start with 'rand'"),
    ("rand-p1.5", "needs 0 <= p <= 1"),
])
def test_bad_randaugment_spec_is_a_one_line_error(spec, message):
  with pytest.raises(UserError, match=message):
    pp.build(f"randaugment('{spec}')")


def test_randaugment_refuses_float_images():
  fn = pp.build("value_range(-1, 1)|randaugment")
  with pytest.raises(UserError, match="before value_range"):
    fn({"image": photo()}, np.random.default_rng(0))


@pytest.mark.parametrize("seed", range(20))
def test_random_erasing_box_is_timms(seed, monkeypatch):
  """timm's RandomErasing(0.25, mode='pixel') fed the same random numbers erases the same box."""
  monkeypatch.setattr(timm_re, "random", NumpyRandom(seed))
  h, w = 24, 32
  theirs = torch.full((3, h, w), 1e6)
  timm_re.RandomErasing(0.25, mode="pixel", device="cpu")(theirs)
  ours = augment.random_erase(np.full((h, w, 3), 1e6, np.float32), np.random.default_rng(seed))
  np.testing.assert_array_equal(ours != 1e6, theirs.permute(1, 2, 0).numpy() != 1e6)


def test_random_erasing_statistics():
  fn = pp.build("random_erase(0.25)")
  h, w = 32, 32
  erased = []
  for seed in range(4000):
    out = fn({"image": np.full((h, w, 3), 1e6, np.float32)}, np.random.default_rng(seed))["image"]
    box = out != 1e6
    if box.any():
      ys, xs = np.nonzero(box.any(-1))
      bh, bw = np.ptp(ys) + 1, np.ptp(xs) + 1
      assert box.sum() == bh * bw * 3  # one rectangle, every channel
      assert 0.02 * h * w * 0.8 <= bh * bw <= h * w / 3 * 1.2
      erased.append(out[box])
  # 4000 draws at p 0.25 (a box always fits at these areas): binomial sd 27, 5 sd is 137.
  assert abs(len(erased) - 1000) < 137
  noise = np.concatenate(erased)
  assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1.0) < 0.02  # per-pixel N(0, 1)


def test_random_erasing_modes_and_errors():
  img = {"image": np.ones((16, 16, 3), np.float32)}
  const = pp.build("random_erase(1.0, mode='const')")(img, np.random.default_rng(0))["image"]
  assert set(np.unique(const)) == {0.0, 1.0}
  rand = pp.build("random_erase(1.0, mode='rand')")(img, np.random.default_rng(0))["image"]
  box = rand != 1.0
  assert box.any() and all(len(np.unique(rand[..., c][box[..., c]])) == 1 for c in range(3))
  with pytest.raises(UserError, match="unknown random_erase mode 'pixels'"):
    pp.build("random_erase(mode='pixels')")
  with pytest.raises(UserError, match="random_erase needs 0 <= p <= 1"):
    pp.build("random_erase(p=2)")
  with pytest.raises(UserError, match="after value_range"):
    pp.build("random_erase")({"image": np.zeros((8, 8, 3), np.uint8)}, np.random.default_rng(0))
