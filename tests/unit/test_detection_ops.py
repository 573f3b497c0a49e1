"""Properties of `inception_zoo.ops` that need no torchvision: static shapes under jit, gradients, sampling
quotas, Soft-NMS against a plain loop, mmdet's level rule and host-side mask crops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_zoo import ops


def random_boxes(rng, n, extent=100., min_size=1., max_size=50.):
  xy = rng.uniform(0, extent, (n, 2))
  return np.concatenate([xy, xy + rng.uniform(min_size, max_size, (n, 2))], 1).astype(np.float32)


def test_nms_static_shapes_compile_once():
  rng = np.random.default_rng(0)
  boxes = random_boxes(rng, 200)
  scores = rng.uniform(size=200).astype(np.float32)
  traces = []

  @jax.jit
  def run(boxes, scores, valid):
    traces.append(1)  # runs only while tracing
    return ops.nms(boxes, scores, 0.5, 50, valid)

  kept = []
  for num_valid in (0, 1, 30, 200):
    indices, keep_valid = run(boxes, scores, np.arange(200) < num_valid)
    assert indices.shape == (50,) and indices.dtype == jnp.int32
    assert keep_valid.shape == (50,) and keep_valid.dtype == jnp.bool_
    assert np.all(np.asarray(indices)[np.asarray(keep_valid)] < num_valid)
    kept.append(int(keep_valid.sum()))
  assert len(traces) == 1
  assert kept[0] == 0 and kept[1] == 1 and 0 < kept[2] <= 30 and kept[3] == 50


def test_nms_keeps_all_disjoint_boxes_in_score_order():
  boxes = np.asarray([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5], [0, 0, 1, 1.05]], np.float32)
  scores = np.asarray([0.1, 0.9, 0.5, 0.2], np.float32)
  indices, keep_valid = ops.nms(boxes, scores, 0.5, 6)
  np.testing.assert_array_equal(np.asarray(indices)[np.asarray(keep_valid)], [1, 2, 3])
  indices, keep_valid = ops.batched_nms(boxes, scores, np.asarray([0, 0, 0, 1]), 0.5, 6)
  np.testing.assert_array_equal(np.asarray(indices)[np.asarray(keep_valid)], [1, 2, 3, 0])


@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_roi_align_gradients(sampling_ratio):
  rng = np.random.default_rng(1)
  features = jnp.asarray(rng.normal(size=(2, 16, 20, 3)), jnp.float32)
  boxes = random_boxes(rng, 10, extent=60., min_size=4., max_size=30.)
  batch_index = jnp.asarray(rng.integers(0, 2, 10), jnp.int32)
  loss = lambda f, b: jnp.sum(ops.roi_align(f, boxes, b, (4, 4), 0.25, sampling_ratio, True) ** 2)
  grad = jax.jit(jax.grad(loss))
  g = grad(features, batch_index)
  assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
  assert np.abs(grad(features, jnp.zeros(10, jnp.int32))[1]).max() == 0  # a RoI reads only its own image


def test_multiscale_is_roi_align_on_each_level():
  rng = np.random.default_rng(2)
  feats = [jnp.asarray(rng.normal(size=(2, 32 // 2 ** i, 40 // 2 ** i, 3)), jnp.float32) for i in range(3)]
  boxes = random_boxes(rng, 30, extent=120., min_size=4., max_size=100.)
  batch_index = jnp.asarray(rng.integers(0, 2, 30), jnp.int32)
  levels = jnp.asarray(rng.integers(0, 3, 30), jnp.int32)
  scales = ops.infer_scales([f.shape[1:3] for f in feats], (128, 160))
  got = ops.multiscale_roi_align(feats, boxes, batch_index, (5, 5), scales=scales, sampling_ratio=0, aligned=True,
                                 levels=levels)
  for level, (f, scale) in enumerate(zip(feats, scales)):
    want = ops.roi_align(f, boxes, batch_index, (5, 5), scale, 0, True)
    np.testing.assert_allclose(np.asarray(got)[levels == level], np.asarray(want)[levels == level], atol=1e-6)


@pytest.mark.parametrize("num_pos, num_neg, want_pos, want_neg", [(500, 2000, 64, 192), (10, 2000, 10, 246),
                                                                  (10, 100, 10, 100), (0, 0, 0, 0)])
def test_sample_balanced_quotas(num_pos, num_neg, want_pos, want_neg):
  labels = np.full(3000, -1, np.int32)
  labels[:num_pos] = 1
  labels[num_pos:num_pos + num_neg] = 0
  labels = np.random.default_rng(3).permutation(labels)
  sample = jax.jit(ops.sample_balanced, static_argnums=(2, 3))
  pos, neg = map(np.asarray, sample(labels, jax.random.key(0), 256, 0.25))
  assert pos.sum() == want_pos and neg.sum() == want_neg
  assert np.all(labels[pos] == 1) and np.all(labels[neg] == 0)
  pos2, neg2 = map(np.asarray, sample(labels, jax.random.key(1), 256, 0.25))
  if num_pos > want_pos:
    assert not np.array_equal(pos, pos2)  # a different key draws a different subset
  if num_neg > want_neg:
    assert not np.array_equal(neg, neg2)


def soft_nms_loop(boxes, scores, iou_threshold, sigma, score_threshold, method):
  """mmcv's soft_nms CPU loop, without its in-place swaps: (indices, scores) in selection order."""
  scores = scores.astype(np.float64).copy()
  alive = list(range(len(boxes)))
  area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
  picked, picked_scores = [], []
  while alive:
    i = max(alive, key=lambda k: scores[k])
    alive.remove(i)
    picked.append(i)
    picked_scores.append(scores[i])
    rest = []
    for j in alive:
      wh = np.maximum(np.minimum(boxes[i, 2:], boxes[j, 2:]) - np.maximum(boxes[i, :2], boxes[j, :2]), 0)
      inter = wh[0] * wh[1]
      iou = inter / (area(boxes[i]) + area(boxes[j]) - inter)
      if method == "gaussian":
        scores[j] *= np.exp(-iou * iou / sigma)
      elif iou >= iou_threshold:
        scores[j] *= 1 - iou
      if scores[j] >= score_threshold:
        rest.append(j)
    alive = rest
  return np.asarray(picked), np.asarray(picked_scores)


@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_soft_nms_matches_loop(method):
  rng = np.random.default_rng(4)
  boxes = random_boxes(rng, 60, extent=60.)
  scores = rng.uniform(0.05, 1, 60).astype(np.float32)
  want_idx, want_scores = soft_nms_loop(boxes, scores, 0.3, 0.5, 0.05, method)
  run = jax.jit(ops.soft_nms, static_argnames=("max_output", "method"))
  indices, new_scores, keep_valid = map(np.asarray, run(boxes, scores, 0.3, 0.5, 0.05, max_output=60,
                                                        method=method))
  assert keep_valid.sum() == len(want_idx) < 60  # some boxes decayed below the threshold
  np.testing.assert_array_equal(indices[keep_valid], want_idx)
  np.testing.assert_allclose(new_scores[keep_valid], want_scores, rtol=1e-5)
  # a smaller max_output keeps the first picks; padding boxes never appear
  valid = np.arange(60) < 40
  indices, _, keep_valid = map(np.asarray, run(boxes, scores, 0.3, 0.5, 0.05, max_output=10, method=method,
                                               valid=valid))
  want_idx, _ = soft_nms_loop(boxes[:40], scores[:40], 0.3, 0.5, 0.05, method)
  np.testing.assert_array_equal(indices[keep_valid], want_idx[:10])


def test_mmdet_levels():
  sides = np.asarray([20, 56, 111, 112, 224, 447, 448, 1000], np.float32)
  boxes = np.stack([np.zeros(8), np.zeros(8), sides, sides], 1).astype(np.float32)
  np.testing.assert_array_equal(ops.mmdet_level_for_boxes(boxes, 4), [0, 0, 0, 1, 2, 2, 3, 3])
  # a 112 x 28 box has sqrt area 56
  np.testing.assert_array_equal(ops.mmdet_level_for_boxes(np.float32([[10, 10, 122, 38]]), 4), [0])
  np.testing.assert_array_equal(ops.level_for_boxes(boxes, 2, 5), [2, 2, 2, 3, 4, 4, 5, 5])


def test_match_padding_and_empty():
  iou = np.asarray([[0.9, 0.5, 0.1], [0.2, 0.6, 0.0], [1.0, 1.0, 1.0]], np.float32)
  valid = np.asarray([True, True, False])  # the last gt is padding
  np.testing.assert_array_equal(ops.match(iou, valid, 0.7, 0.3, False), [0, -2, -1])
  np.testing.assert_array_equal(ops.match(iou, valid, 0.7, 0.3, True), [0, 1, -1])
  np.testing.assert_array_equal(ops.match(iou, np.zeros(3, bool), 0.7, 0.3, True), [-1, -1, -1])


def test_box_coder_round_trip_and_anchor_layout():
  rng = np.random.default_rng(5)
  proposals, gt = random_boxes(rng, 50), random_boxes(rng, 50)
  deltas = ops.encode_boxes(gt, proposals, (10., 10., 5., 5.))
  np.testing.assert_allclose(ops.decode_boxes(deltas, proposals, (10., 10., 5., 5.)), gt, rtol=1e-5, atol=1e-4)
  a = np.asarray(ops.anchors((2, 3), (16, 8), (32, 64), (0.5, 1., 2.)))
  assert a.shape == (2 * 3 * 6, 4)
  np.testing.assert_array_equal(a[6] - a[0], [8, 0, 8, 0])  # the next x position, same cell anchor
  np.testing.assert_array_equal(a[18] - a[0], [0, 16, 0, 16])  # the next row
  np.testing.assert_array_equal(a[1], [-45, -23, 45, 23])  # ratio 0.5 (h / w), size 64: w 90.5, h 45.3, halved, rounded


def test_crop_masks_hand_made():
  mask = np.zeros((1, 40, 40), np.uint8)
  mask[0, 10:30, 10:30] = 1
  np.testing.assert_array_equal(ops.crop_masks(mask, np.float32([[10, 10, 30, 30]]), 20), np.ones((1, 20, 20)))
  # shrinking by 2 averages 2 x 2 samples at pixel centres: the block exactly, and the area is kept
  crop = ops.crop_masks(mask, np.float32([[0, 0, 40, 40]]), 20)[0]
  want = np.zeros((20, 20), np.float32)
  want[5:15, 5:15] = 1
  np.testing.assert_array_equal(crop, want)
  # enlarging 2x in y: bilinear at pixel centres blurs the mask's edge over one input pixel, keeping its area
  crop = ops.crop_masks(mask, np.float32([[0, 0, 40, 20]]), 40)[0]
  rows = np.concatenate([np.zeros(19), [0.25, 0.75], np.ones(19)])
  cols = (np.arange(40) >= 10) & (np.arange(40) < 30)
  assert crop.dtype == np.float32 and crop.shape == (40, 40)
  np.testing.assert_allclose(crop, np.outer(rows, cols), atol=1e-6)
  assert crop.sum() * (40 * 20) / 40 ** 2 == pytest.approx(mask[0, :20].sum())
