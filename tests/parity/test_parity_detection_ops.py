"""Parity of `inception_zoo.ops` (detection boxes, NMS, RoIAlign, masks) with torchvision on seeded random inputs.

torchvision is the reference for every op but Soft-NMS and mmdet's level rule (tests/unit/test_detection_ops.py).
Tolerances are stated per test; float32 ops agree to rounding, index-valued ops exactly.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
# The references come with the test extra (`pip install -e '.[test]'`); no silent skip without them.
import torch
import torchvision
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes
from torchvision.ops.poolers import LevelMapper

from inception_zoo import ops


def random_boxes(rng, n, extent=100., min_size=1., max_size=50., lo=0.):
  xy = rng.uniform(lo, extent, (n, 2))
  wh = rng.uniform(min_size, max_size, (n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def t(x):
  return torch.from_numpy(np.array(x))  # a writable copy


def test_box_iou_clip_and_small_boxes():
  rng = np.random.default_rng(0)
  a, b = random_boxes(rng, 40), random_boxes(rng, 30)
  np.testing.assert_allclose(ops.box_iou(a, b), torchvision.ops.box_iou(t(a), t(b)).numpy(), rtol=0, atol=1e-6)
  np.testing.assert_allclose(ops.box_area(a), torchvision.ops.box_area(t(a)).numpy(), rtol=1e-6)
  boxes = random_boxes(rng, 50, lo=-30., max_size=80.)
  np.testing.assert_array_equal(ops.clip_boxes(boxes, 60, 70),
                                torchvision.ops.clip_boxes_to_image(t(boxes), (60, 70)).numpy())
  traced = jax.jit(ops.clip_boxes)(boxes, jnp.float32(60), jnp.float32(70))
  np.testing.assert_array_equal(traced, torchvision.ops.clip_boxes_to_image(t(boxes), (60, 70)).numpy())
  keep = torchvision.ops.remove_small_boxes(t(boxes), 20.).numpy()
  np.testing.assert_array_equal(np.nonzero(np.asarray(ops.small_boxes_mask(boxes, 20.)))[0], keep)


@pytest.mark.parametrize("weights", [(1., 1., 1., 1.), (10., 10., 5., 5.)])
def test_box_coder(weights):
  rng = np.random.default_rng(1)
  proposals, reference = random_boxes(rng, 200), random_boxes(rng, 200)
  coder = det_utils.BoxCoder(weights)
  want = coder.encode_single(t(reference), t(proposals)).numpy()
  np.testing.assert_allclose(ops.encode_boxes(reference, proposals, weights), want, rtol=1e-5, atol=1e-5)
  deltas = rng.normal(0, 2, (200, 4)).astype(np.float32) * np.float32(weights)  # some dw, dh above the clip
  want = coder.decode_single(t(deltas), t(proposals)).numpy()
  np.testing.assert_allclose(ops.decode_boxes(deltas, proposals, weights), want, rtol=1e-5, atol=1e-5 * 100)


def test_anchors_match_anchor_generator():
  image_h, image_w = 128, 160
  sizes = ((32,), (64,), (128, 161.3, 203.2), (256,))
  ratios = ((0.5, 1., 2.),) * 4
  strides = (4, 8, 16, 32)
  feats = [torch.zeros(1, 1, image_h // s, image_w // s) for s in strides]
  want = AnchorGenerator(sizes, ratios)(ImageList(torch.zeros(1, 3, image_h, image_w), [(image_h, image_w)]), feats)
  ours = [ops.anchors((image_h // s, image_w // s), s, size, ratio) for s, size, ratio in zip(strides, sizes, ratios)]
  np.testing.assert_array_equal(np.concatenate(ours), want[0].numpy())
  np.testing.assert_array_equal(ops.anchors((4, 5), (32, 32), (64,), (0.5, 1., 2.)),
                                ops.anchors((4, 5), 32, (64,), (0.5, 1., 2.)))


@pytest.mark.parametrize("allow_low_quality", [False, True])
def test_matcher(allow_low_quality):
  rng = np.random.default_rng(2)
  preds = random_boxes(rng, 300, max_size=40.)
  # integer boxes, so that tied IoUs are exactly equal: gt 0's best predictions tie at IoU 1, gt 1's at 0.6
  # (between the thresholds) and gt 2's at 0.05 (below them, far from everything else)
  gt = np.concatenate([preds[:1], np.float32([[20, 20, 60, 50], [200, 200, 240, 240]]), preds[1:4]])
  preds[[10, 20, 30]] = gt[0]
  preds[[40, 50]] = [[30, 20, 70, 50], [10, 20, 50, 50]]
  preds[[60, 70]] = [[230, 230, 250, 250], [190, 190, 210, 210]]
  iou = ops.box_iou(gt, preds)
  for g, best, count in [(1, 0.6, 2), (2, 100 / 1900, 2)]:
    assert np.isclose(iou[g].max(), best) and np.sum(iou[g] == iou[g].max()) == count
  want = det_utils.Matcher(0.7, 0.3, allow_low_quality)(t(iou)).numpy()
  np.testing.assert_array_equal(ops.match(iou, np.ones(6, bool), 0.7, 0.3, allow_low_quality), want)
  # padding gts (garbage rows) change nothing
  padded = jnp.concatenate([iou, jnp.asarray(rng.uniform(0, 1, (3, 300)), jnp.float32)])
  valid = np.arange(9) < 6
  np.testing.assert_array_equal(jax.jit(ops.match, static_argnums=(2, 3, 4))(padded, valid, 0.7, 0.3,
                                                                               allow_low_quality), want)


def test_level_mapper():
  rng = np.random.default_rng(3)
  boxes = random_boxes(rng, 500, extent=800., min_size=4., max_size=700.)
  want = LevelMapper(2, 5)([t(boxes)]).numpy()
  np.testing.assert_array_equal(ops.level_for_boxes(boxes, 2, 5) - 2, want)


def roi_boxes(rng, n):
  """RoIs on a 96 x 120 image: tiny, partly outside the map, and large."""
  return np.concatenate([random_boxes(rng, n - 12, extent=110., min_size=1., max_size=60.),
                         random_boxes(rng, 6, extent=110., min_size=0.1, max_size=1.),
                         random_boxes(rng, 6, extent=30., min_size=20., max_size=80., lo=-50.) + 80])


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_roi_align(aligned, sampling_ratio):
  rng = np.random.default_rng(4)
  features = rng.normal(size=(2, 24, 30, 5)).astype(np.float32)
  boxes = roi_boxes(rng, 80)
  batch_index = rng.integers(0, 2, 80).astype(np.int32)
  rois = np.concatenate([batch_index[:, None].astype(np.float32), boxes], 1)
  want = torchvision.ops.roi_align(t(features.transpose(0, 3, 1, 2)), t(rois), (7, 6), 0.25, sampling_ratio,
                                   aligned).numpy().transpose(0, 2, 3, 1)
  got = jax.jit(ops.roi_align, static_argnums=(3, 4, 5, 6))(features, boxes, batch_index, (7, 6), 0.25,
                                                           sampling_ratio, aligned)
  # Every RoI here needs at most ceil(80 / 4 / 6) = 4 < max_sampling adaptive samples a side, so all must match.
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_multiscale_roi_align():
  torch.manual_seed(0)
  rng = np.random.default_rng(5)
  image_h, image_w = 256, 320
  feats = [rng.normal(size=(2, image_h // s, image_w // s, 4)).astype(np.float32) for s in (4, 8, 16, 32)]
  # sizes log-uniform over 16 to 640 px so every FPN level gets RoIs; large ones overhang the image
  boxes = []
  for _ in range(2):
    wh = np.exp(rng.uniform(np.log(16), np.log(640), (40, 1))) * rng.uniform(0.7, 1.4, (40, 2))
    xy = rng.uniform(0, 300, (40, 2)) - wh / 2
    boxes.append(np.concatenate([xy, xy + wh], 1).astype(np.float32))
  pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
  x = {str(i): t(f.transpose(0, 3, 1, 2)) for i, f in enumerate(feats)}
  want = pooler(x, [t(b) for b in boxes], [(image_h, image_w)] * 2).numpy().transpose(0, 2, 3, 1)
  all_boxes = np.concatenate(boxes)
  batch_index = np.repeat(np.arange(2, dtype=np.int32), 40)
  levels = ops.level_for_boxes(all_boxes, 2, 5) - 2
  assert len(np.unique(levels)) == 4  # every level is exercised
  scales = ops.infer_scales([f.shape for f in feats], (image_h, image_w))
  assert scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
  got = ops.multiscale_roi_align(feats, all_boxes, batch_index, 7, scales=scales, sampling_ratio=2, aligned=False,
                                 levels=levels)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("n, iou_threshold, max_output, tile_size", [(300, 0.5, 300, 64), (300, 0.3, 40, 256)])
def test_nms(n, iou_threshold, max_output, tile_size):
  rng = np.random.default_rng(6)
  boxes = random_boxes(rng, n)
  scores = (rng.permutation(n) / n).astype(np.float32)  # no exact ties
  classes = rng.integers(0, 4, n)
  valid = rng.uniform(size=n) < 0.8
  run = jax.jit(ops.nms, static_argnums=(2, 3), static_argnames="tile_size")
  run_batched = jax.jit(ops.batched_nms, static_argnums=(3, 4), static_argnames="tile_size")

  def check(indices_valid, want):
    indices, keep_valid = map(np.asarray, indices_valid)
    np.testing.assert_array_equal(indices[keep_valid], want[:max_output])
    assert keep_valid.sum() == min(len(want), max_output) and not keep_valid[keep_valid.sum():].any()

  check(run(boxes, scores, iou_threshold, max_output, tile_size=tile_size),
        torchvision.ops.nms(t(boxes), t(scores), iou_threshold).numpy())
  check(run_batched(boxes, scores, classes, iou_threshold, max_output, tile_size=tile_size),
        torchvision.ops.batched_nms(t(boxes), t(scores), t(classes), iou_threshold).numpy())
  sub = np.nonzero(valid)[0]
  check(run(boxes, scores, iou_threshold, max_output, valid, tile_size=tile_size),
        sub[torchvision.ops.nms(t(boxes[sub]), t(scores[sub]), iou_threshold).numpy()])


def test_paste_masks():
  torch.manual_seed(0)
  rng = np.random.default_rng(7)
  masks = torch.rand(40, 1, 28, 28)
  # 1 to 50 px boxes centred in the 60 x 80 image, many across its borders (torchvision's paste fails on boxes
  # wholly outside the image)
  centre = rng.uniform(0, 1, (40, 2)) * np.float32([80, 60])
  half = rng.uniform(0.5, 25, (40, 2))
  boxes = np.concatenate([centre - half, centre + half], 1).astype(np.float32)
  want = paste_masks_in_image(masks, t(boxes), (60, 80)).numpy()[:, 0]
  got = np.asarray(jax.jit(ops.paste_masks, static_argnums=(2, 3))(masks.numpy()[:, 0], boxes, 60, 80))
  # Same integer boxes and interpolation weights: only float summation order differs.
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def ellipse_masks(rng, n, h, w):
  yy, xx = np.mgrid[:h, :w]
  masks, boxes = [], []
  for _ in range(n):
    cy, cx = rng.uniform(15, h - 15), rng.uniform(15, w - 15)
    ry, rx = rng.uniform(5, 14), rng.uniform(5, 14)
    m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    ys, xs = np.nonzero(m)
    masks.append(m)
    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
  return np.stack(masks).astype(np.uint8), np.asarray(boxes, np.float32)


def test_mask_targets_match_project_masks_on_boxes():
  rng = np.random.default_rng(8)
  masks, gt_boxes = ellipse_masks(rng, 8, 80, 100)
  matched = rng.integers(0, 8, 64).astype(np.int32)
  g = gt_boxes[matched]
  size = (g[:, 2:] - g[:, :2])
  jitter = rng.uniform(-0.15, 0.15, (64, 4)) * np.concatenate([size, size], 1)  # IoU >~ 0.5 proposals
  proposals = (g + jitter).astype(np.float32)
  want = project_masks_on_boxes(t(masks), t(proposals), t(matched.astype(np.int64)), 28).numpy()
  crops = ops.crop_masks(masks, gt_boxes, 112)
  got = np.asarray(ops.mask_targets(crops, gt_boxes, matched, proposals, 28))
  diff = np.abs(got - want)
  agree = ((got > 0.5) == (want > 0.5)).mean()
  # measured: mean 0.0064, binarized agreement 99.7% (differences sit on the masks' edges)
  assert diff.mean() < 0.015 and agree > 0.99, (diff.mean(), agree)
