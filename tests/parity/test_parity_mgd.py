"""MGD's losses (`inception_zoo/projects/mgd/losses.py`) equal the official PyTorch code (JayQine/MGD-SSSS,
`city8.resnet18_deeplabv3plus/`), transcribed below line by line on NCHW tensors: `mask_gen.py`'s
`BoxMaskGenerator.generate_params`, `criterion.py`'s `CriterionCosineSimilarity`, and `train.py`'s CutMix, cross
pseudo-supervision (`criterion = nn.CrossEntropyLoss(reduction='mean', ignore_index=255)`), `sem_sens_loss` and
`content_loss` lines (before their weights and the all-reduce). Box masks agree exactly for one
`np.random.RandomState` seed; losses within 1e-5 and the gradients w.r.t. the student within 1e-4 of torch's
autograd. Maps are 13 x 17 (and, for the pooling alone, smaller than the 7 x 7 grid), so the adaptive pooling bins
overlap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from inception_zoo.projects.mgd.losses import (adaptive_avg_pool, box_masks, cosine_self_similarity,
                                               cross_pseudo_loss, image_level_loss, mix, region_level_loss)

SEEDS = [0, 1, 2]
# one compilation per loss (eager mode would compile each primitive): values and gradients w.r.t. student and teacher
cross_pseudo_with_grads = jax.jit(jax.value_and_grad(lambda s, t0, t1, mask: cross_pseudo_loss(s, mix(t0, t1, mask)),
                                                     argnums=(0, 1)))
image_level_with_grads = jax.jit(jax.value_and_grad(image_level_loss, argnums=(0, 1)))
region_level_with_grads = jax.jit(jax.value_and_grad(region_level_loss, argnums=(0, 1)))


class BoxMaskGenerator:
  """mask_gen.py's BoxMaskGenerator (constructor and generate_params)."""

  def __init__(self, prop_range, n_boxes=1, random_aspect_ratio=True, prop_by_area=True, within_bounds=True,
               invert=False):
    if isinstance(prop_range, float):
      prop_range = (prop_range, prop_range)
    self.prop_range = prop_range
    self.n_boxes = n_boxes
    self.random_aspect_ratio = random_aspect_ratio
    self.prop_by_area = prop_by_area
    self.within_bounds = within_bounds
    self.invert = invert

  def generate_params(self, n_masks, mask_shape, rng=None):
    if rng is None:
      rng = np.random

    if self.prop_by_area:
      # Choose the proportion of each mask that should be above the threshold
      mask_props = rng.uniform(self.prop_range[0], self.prop_range[1], size=(n_masks, self.n_boxes))

      # Zeros will cause NaNs, so detect and suppres them
      zero_mask = mask_props == 0.0

      if self.random_aspect_ratio:
        y_props = np.exp(rng.uniform(low=0.0, high=1.0, size=(n_masks, self.n_boxes)) * np.log(mask_props))
        x_props = mask_props / y_props
      else:
        y_props = x_props = np.sqrt(mask_props)
      fac = np.sqrt(1.0 / self.n_boxes)
      y_props *= fac
      x_props *= fac

      y_props[zero_mask] = 0
      x_props[zero_mask] = 0
    else:
      if self.random_aspect_ratio:
        y_props = rng.uniform(self.prop_range[0], self.prop_range[1], size=(n_masks, self.n_boxes))
        x_props = rng.uniform(self.prop_range[0], self.prop_range[1], size=(n_masks, self.n_boxes))
      else:
        x_props = y_props = rng.uniform(self.prop_range[0], self.prop_range[1], size=(n_masks, self.n_boxes))
      fac = np.sqrt(1.0 / self.n_boxes)
      y_props *= fac
      x_props *= fac

    sizes = np.round(np.stack([y_props, x_props], axis=2) * np.array(mask_shape)[None, None, :])

    if self.within_bounds:
      positions = np.round((np.array(mask_shape) - sizes) * rng.uniform(low=0.0, high=1.0, size=sizes.shape))
      rectangles = np.append(positions, positions + sizes, axis=2)
    else:
      centres = np.round(np.array(mask_shape) * rng.uniform(low=0.0, high=1.0, size=sizes.shape))
      rectangles = np.append(centres - sizes * 0.5, centres + sizes * 0.5, axis=2)

    if self.invert:
      masks = np.zeros((n_masks, 1) + mask_shape)
    else:
      masks = np.ones((n_masks, 1) + mask_shape)
    for i, sample_rectangles in enumerate(rectangles):
      for y0, x0, y1, x1 in sample_rectangles:
        masks[i, 0, int(y0):int(y1), int(x0):int(x1)] = 1 - masks[i, 0, int(y0):int(y1), int(x0):int(x1)]
    return masks


class CriterionCosineSimilarity(nn.Module):
  """criterion.py's CriterionCosineSimilarity."""

  def __init__(self):
    super(CriterionCosineSimilarity, self).__init__()
    self.ep = 1e-6

  def forward(self, p, q):
    sim_matrix = p.transpose(-2, -1).matmul(q)
    a = torch.norm(p, p=2, dim=-2)
    b = torch.norm(q, p=2, dim=-2)
    sim_matrix /= a.unsqueeze(-1)
    sim_matrix /= b.unsqueeze(-2)
    return sim_matrix


criterion = nn.CrossEntropyLoss(reduction='mean', ignore_index=255)
criterion_cos = CriterionCosineSimilarity()


def official_consist(logits_cons_stu_1, logits_u0_tea_2, logits_u1_tea_2, batch_mix_masks):
  """train.py: the teacher's logits mixed with the images' mask, its argmax supervising the student."""
  logits_cons_tea_2 = logits_u0_tea_2 * (1 - batch_mix_masks) + logits_u1_tea_2 * batch_mix_masks
  _, ps_label_2 = torch.max(logits_cons_tea_2, dim=1)
  ps_label_2 = ps_label_2.long()
  return criterion(logits_cons_stu_1, ps_label_2)


def official_sem_sens(logits_cons_stu_1, logits_cons_stu_3):
  cls_logit1 = F.adaptive_avg_pool2d(logits_cons_stu_1, (1, 1))
  cls_logit3 = F.adaptive_avg_pool2d(logits_cons_stu_3, (1, 1))
  sem_sens_loss = torch.sum(torch.abs(cls_logit1 - cls_logit3))
  return sem_sens_loss


def official_content(aspp_feat1, aspp_feat2):
  q1 = F.adaptive_avg_pool2d(aspp_feat1, (7, 7))
  q2 = F.adaptive_avg_pool2d(aspp_feat2, (7, 7))
  q1 = q1.flatten(start_dim=2)
  q2 = q2.flatten(start_dim=2)

  self_sim_matrix_1 = criterion_cos(q1, q1)
  self_sim_matrix_2 = criterion_cos(q2, q2)

  content_loss = F.mse_loss(self_sim_matrix_1, self_sim_matrix_2)
  return content_loss


def nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def assert_grad_close(got, expected):
  # entries that cancel to ~0 are compared against the gradient's scale, the rest at rtol 1e-4
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def maps(seed, shape, scale=3.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("options", [
    {},  # MGD's config
    {"random_aspect_ratio": False},
    {"prop_by_area": False},
    {"prop_by_area": False, "random_aspect_ratio": False},
    {"within_bounds": False, "invert": False, "n_boxes": 1, "prop_range": (0.1, 0.9)},
])
def test_box_masks_equal_the_official_generator(seed, options):
  config = {"prop_range": (0.25, 0.5), "n_boxes": 3, "random_aspect_ratio": True, "prop_by_area": True,
            "within_bounds": True, "invert": True, **options}
  expected = BoxMaskGenerator(**config).generate_params(4, (13, 17), rng=np.random.RandomState(seed))
  got = box_masks(np.random.RandomState(seed), 4, (13, 17), **config)
  assert got.shape == (4, 13, 17, 1) and got.dtype == np.float32
  np.testing.assert_array_equal(got, expected.transpose(0, 2, 3, 1).astype(np.float32))
  assert set(np.unique(got)) <= {0.0, 1.0}


def test_box_masks_mix_both_images_with_a_generator():
  masks = box_masks(np.random.default_rng(0), 8, (32, 32))
  assert 0.0 < masks.mean() < 1.0 and set(np.unique(masks)) == {0.0, 1.0}


@pytest.mark.parametrize("in_hw,out_hw", [((13, 17), (7, 7)), ((5, 6), (7, 7)), ((13, 17), (1, 1)), ((9, 4), (2, 3))])
def test_adaptive_avg_pool_equals_pytorch(in_hw, out_hw):
  x = maps(0, (2, *in_hw, 3))
  expected = nhwc(F.adaptive_avg_pool2d(nchw(x), out_hw))
  got = jax.jit(adaptive_avg_pool, static_argnums=1)(jnp.asarray(x), out_hw)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_pseudo_loss_on_mixed_teacher_logits_equals_official(seed):
  b, h, w, k = 2, 13, 17, 5
  student, tea0, tea1 = (maps(seed * 3 + i, (b, h, w, k)) for i in range(3))
  masks = box_masks(np.random.RandomState(seed), b, (h, w))

  student_t = nchw(student).requires_grad_()
  expected = official_consist(student_t, nchw(tea0), nchw(tea1), nchw(masks))
  expected.backward()

  got, (grad, teacher_grad) = cross_pseudo_with_grads(*map(jnp.asarray, (student, tea0, tea1, masks)))
  assert float(got) == pytest.approx(expected.item(), rel=1e-5)
  assert_grad_close(grad, nhwc(student_t.grad))
  assert not np.any(np.asarray(teacher_grad))  # stop-gradient, as the teacher's forward under torch.no_grad()


@pytest.mark.parametrize("seed", SEEDS)
def test_mix_equals_the_official_cutmix(seed):
  a, b_ = maps(seed, (2, 13, 17, 3)), maps(seed + 10, (2, 13, 17, 3))
  masks = box_masks(np.random.RandomState(seed), 2, (13, 17))
  batch_mix_masks = nchw(masks)
  expected = nchw(a) * (1 - batch_mix_masks) + nchw(b_) * batch_mix_masks
  np.testing.assert_array_equal(np.asarray(mix(jnp.asarray(a), jnp.asarray(b_), jnp.asarray(masks))), nhwc(expected))


@pytest.mark.parametrize("seed", SEEDS)
def test_image_level_loss_equals_official(seed):
  student, teacher = maps(seed, (2, 13, 17, 5)), maps(seed + 10, (2, 13, 17, 5), scale=1.0)
  student_t = nchw(student).requires_grad_()
  expected = official_sem_sens(student_t, nchw(teacher))
  expected.backward()

  s, t = jnp.asarray(student), jnp.asarray(teacher)
  got, (grad, teacher_grad) = image_level_with_grads(s, t)
  assert float(got) == pytest.approx(expected.item(), rel=1e-5)
  assert_grad_close(grad, nhwc(student_t.grad))
  assert not np.any(np.asarray(teacher_grad))  # stop-gradient, as the teacher's forward under torch.no_grad()
  # a sum over batch and classes, not a mean
  assert float(got) == pytest.approx(np.abs(student.mean((1, 2)) - teacher.mean((1, 2))).sum(), rel=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_region_level_loss_equals_official(seed):
  # ReLU'd like the decoder's output, which the official loss takes
  student = np.maximum(maps(seed, (2, 13, 17, 16)), 0)
  teacher = np.maximum(maps(seed + 10, (2, 13, 17, 16)), 0)
  student_t = nchw(student).requires_grad_()
  expected = official_content(student_t, nchw(teacher))
  expected.backward()

  s, t = jnp.asarray(student), jnp.asarray(teacher)
  got, (grad, teacher_grad) = region_level_with_grads(s, t)
  assert float(got) == pytest.approx(expected.item(), rel=1e-5)
  assert_grad_close(grad, nhwc(student_t.grad))
  assert not np.any(np.asarray(teacher_grad))  # stop-gradient, as the teacher's forward under torch.no_grad()

  q = F.adaptive_avg_pool2d(nchw(student), (7, 7)).flatten(start_dim=2)
  np.testing.assert_allclose(np.asarray(jax.jit(cosine_self_similarity)(s)), criterion_cos(q, q).numpy(),
                             rtol=1e-5, atol=1e-6)


def test_self_similarity_of_equal_cells_is_one_and_region_loss_vanishes_only_for_equal_features():
  v = maps(0, (2, 1, 1, 16))
  constant = jnp.broadcast_to(jnp.asarray(v), (2, 13, 17, 16))
  sim = jax.jit(cosine_self_similarity)(constant)
  assert sim.shape == (2, 49, 49)
  np.testing.assert_allclose(np.asarray(sim), 1.0, rtol=1e-6)

  f, g = jnp.asarray(maps(1, (2, 13, 17, 16))), jnp.asarray(maps(2, (2, 13, 17, 16)))
  # 0 up to rounding: XLA may fuse the student's and the teacher's side differently
  assert float(region_level_with_grads(f, f)[0]) == pytest.approx(0.0, abs=1e-12)
  assert float(region_level_with_grads(f, g)[0]) > 1e-4
  # a zero cell (a dead ReLU region) keeps the loss and its gradient finite
  loss, (grad, _) = region_level_with_grads(f.at[0, :4, :4].set(0.0), g)
  assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))
