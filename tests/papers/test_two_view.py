"""The two-view loader of pixel-level self-supervision (projects/pixpro/views.py) and the pp ops it adds: boxes
locate the views in the original image (flips included) as PixPro's cell centres read them, the
colour ops match torchvision, and the loader runs on mocked ImageNet."""
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from inception_zoo.data import datasets, pipeline, pp
from inception_zoo.errors import UserError
from inception_zoo.projects.pixpro import pixpro, views

CROP_FLIP = "inception_crop({size}, area_min=8, return_box=True)|flip_view_lr"


def _crop_at_box(image, box, size):
  """The crop of `image` at a view's box, resized to size x size, mirrored when the box says so."""
  h, w = image.shape[:2]
  ymin, x1, ymax, x2 = box
  rows = slice(round(ymin * h), round(ymax * h))
  crop = image[rows, round(min(x1, x2) * w):round(max(x1, x2) * w)]
  out = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
  return out[:, ::-1] if x1 > x2 else out


def test_views_are_the_crops_at_their_boxes_on_mocked_imagenet():
  fn = views.two_views(CROP_FLIP.format(size=16), CROP_FLIP.format(size=16))
  flipped = 0
  with tfds.testing.mock_data(num_examples=8):
    source = datasets.get_dataset("tfds:imagenet2012", "train").source
    for i in range(8):
      image = pp.build("decode")({"image": source[i]["image"]}, None)["image"]
      ex = fn(source[i], np.random.default_rng(i))
      assert set(ex) == {"view1", "view2", "box1", "box2"}
      for v in "12":
        box = ex["box" + v]
        assert np.all((0 <= box) & (box <= 1)) and box[0] < box[2] and box[1] != box[3], box
        flipped += box[1] > box[3]
        # The same PIL resize of the same pixels, flipped after instead of before: within 1 level.
        np.testing.assert_allclose(ex["view" + v], _crop_at_box(image, box, 16), atol=1)
  assert 0 < flipped < 16  # p = 0.5 of 16 views


def test_boxes_place_view_cells_where_positive_mask_reads_them():
  # An image whose pixels hold their own coordinates (red = column, green = row): each pixel of a view
  # must show the original coordinates `pixpro.cell_centres` gives its cell, flipped views included.
  h, w, size = 200, 240, 32
  rows, cols = np.mgrid[:h, :w]
  image = np.stack([cols, rows, np.zeros_like(rows)], -1).astype(np.uint8)
  fn = views.two_views(CROP_FLIP.format(size=size), CROP_FLIP.format(size=size).replace("lr", "lr(1.0)"))
  for seed in range(3):
    ex = fn({"image": image}, np.random.default_rng(seed))
    for v in "12":
      centres, _ = pixpro.cell_centres(jnp.asarray(ex["box" + v][None]), size, size)
      # Normalised edge coordinates -> pixel-index coordinates (pixel k spans [k, k + 1)).
      expected = (np.asarray(centres[0]) * (h, w) - 0.5).reshape(size, size, 2)
      shown = ex["view" + v][..., [1, 0]].astype(np.float64)
      inner = (slice(2, -2), slice(2, -2))  # the resize clamps at the borders
      np.testing.assert_allclose(shown[inner], expected[inner], atol=1.0)
  assert ex["box2"][1] > ex["box2"][3]  # the always-flipped view


def test_byol_views_build_and_need_a_box():
  v1, v2 = views.byol_views(224)
  assert "gaussian_blur(p=1.0)" in v1 and "solarize(p=0.0)" in v1
  assert "gaussian_blur(p=0.1)" in v2 and "solarize(p=0.2)" in v2
  image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
  ex = views.two_views(*views.byol_views(24))({"image": image, "label": 3}, np.random.default_rng(0))
  assert ex["view1"].shape == (24, 24, 3) and ex["view1"].dtype == np.float32 and "label" not in ex
  with pytest.raises(UserError, match="view 2's preprocessing gives no crop box"):
    views.two_views(v1, "inception_crop(24)")({"image": image}, np.random.default_rng(0))


def test_colour_ops_match_torchvision():
  from torchvision.transforms import functional as tvf
  image = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
  pil = Image.fromarray(image)
  order, factors = [2, 0, 3, 1], [1.3, 0.7, 0.5, 0.08]
  ref = pil
  adjust = [tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation, tvf.adjust_hue]
  for i in order:
    ref = adjust[i](ref, factors[i])
  np.testing.assert_array_equal(pp.color_jitter_image(image, order, factors), np.asarray(ref))
  # A None factor (strength 0) skips its adjustment, as torchvision's ColorJitter does.
  np.testing.assert_array_equal(pp.color_jitter_image(image, [3, 0], [1.3, None, None, None]),
                                np.asarray(tvf.adjust_brightness(pil, 1.3)))
  rng = np.random.default_rng(0)
  gray = pp.build("random_grayscale(1.0)")({"image": image}, rng)["image"]
  np.testing.assert_array_equal(gray, np.asarray(tvf.rgb_to_grayscale(pil, num_output_channels=3)))
  solar = pp.build("solarize(128)")({"image": image}, rng)["image"]
  np.testing.assert_array_equal(solar, np.asarray(tvf.solarize(pil, 128)))
  # Probabilities 0 leave the image alone; blur keeps the shape and a constant image constant.
  off = pp.build("color_jitter(p=0.0)|random_grayscale(0.0)|gaussian_blur(p=0.0)|solarize(p=0.0)")
  np.testing.assert_array_equal(off({"image": image}, rng)["image"], image)
  flat = np.full((9, 9, 3), 77, np.uint8)
  np.testing.assert_array_equal(pp.build("gaussian_blur")({"image": flat}, rng)["image"], flat)
  with pytest.raises(UserError, match="color_jitter needs"):
    pp.build("color_jitter(hue=0.7)")


def test_two_view_batches_resume_by_step():
  # Batch k of the pipeline is a function of (seed, k): started at batch 3, it gives batch 3.
  images = np.random.default_rng(0).integers(0, 256, (8, 30, 40, 3), dtype=np.uint8)
  source = datasets.ArraySource(images, np.zeros(8))
  fn = views.two_views(*views.byol_views(16))
  stream = pipeline.train_batches(source, fn, global_batch=4, seed=0, num_threads=1)
  batches = [next(stream) for _ in range(4)]
  again = next(pipeline.train_batches(source, fn, global_batch=4, seed=0, start_batch=3, num_threads=1))
  for k in batches[3]:
    np.testing.assert_array_equal(batches[3][k], again[k])
