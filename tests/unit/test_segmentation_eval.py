"""Segmentation evaluation: the confusion-matrix metrics against torchmetrics and a hand-computed case,
sliding-window inference against whole-image inference, the logit resize against PyTorch's, predict and the
multi-scale + flip test."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from inception_zoo.errors import UserError
from inception_zoo.eval import segmentation as seg_eval


def random_batches(num_classes=6, present=5, batches=4, seed=0):
  """Predictions and labels of classes 0..present-1 (so the last classes are absent from both), ~10% ignore."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(batches):
    label = rng.integers(0, present, (3, 17, 23))
    pred = np.where(rng.uniform(size=label.shape) < 0.6, label, rng.integers(0, present, label.shape))
    label[rng.uniform(size=label.shape) < 0.1] = 255
    out.append((pred, label))
  return out


def test_metrics_match_torchmetrics_over_a_dataset():
  k = 6
  cm = seg_eval.ConfusionMatrix(k)
  macro = MulticlassJaccardIndex(num_classes=k, average="macro", ignore_index=255)
  per_class = MulticlassJaccardIndex(num_classes=k, average="none", ignore_index=255)
  pixel_acc = MulticlassAccuracy(num_classes=k, average="micro", ignore_index=255)
  batches = random_batches(k)
  batches[0][0][0, 0, :3] = 4  # a few predictions of class 4 on pixels labelled otherwise
  for pred, label in batches:
    cm.update(pred, label)
    for m in (macro, per_class, pixel_acc):
      m.update(torch.tensor(pred), torch.tensor(label))
  r = cm.compute()
  # Whole-dataset IoUs: torchmetrics' macro mean leaves out classes absent from labels and predictions, as
  # mmseg's nanmean does; its per-class values give such a class 0 where mmseg (and this) say NaN.
  np.testing.assert_allclose(r["mIoU"], macro.compute().item(), atol=1e-6)
  tm = per_class.compute().numpy()
  assert np.isnan(r["IoU"][5]) and tm[5] == 0
  np.testing.assert_allclose(r["IoU"][:5], tm[:5], atol=1e-6)
  np.testing.assert_allclose(r["aAcc"], pixel_acc.compute().item(), atol=1e-6)
  assert cm.matrix.dtype == np.int64 and cm.matrix.sum() == sum((label != 255).sum() for _, label in batches)
  # Not a mean of per-image IoUs.
  per_image = []
  for pred, label in batches:
    one = seg_eval.ConfusionMatrix(k)
    one.update(pred, label)
    per_image.append(one.compute()["mIoU"])
  assert abs(np.mean(per_image) - r["mIoU"]) > 1e-6


def test_hand_computed_three_classes():
  label = np.array([[0, 0, 1, 1],
                    [2, 2, 255, 1]])
  pred = np.array([[0, 1, 1, 1],
                   [2, 0, 2, 2]])
  cm = seg_eval.ConfusionMatrix(3)
  cm.update(pred, label)
  np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 1], [1, 0, 1]])
  r = cm.compute()
  # IoU = tp / (labelled + predicted - tp): 1 / (2 + 2 - 1), 2 / (3 + 3 - 2) and 1 / (2 + 2 - 1).
  np.testing.assert_allclose(r["IoU"], [1 / 3, 1 / 2, 1 / 3])
  np.testing.assert_allclose(r["mIoU"], (1 / 3 + 1 / 2 + 1 / 3) / 3)
  np.testing.assert_allclose(r["Acc"], [1 / 2, 2 / 3, 1 / 2])
  np.testing.assert_allclose(r["mAcc"], (1 / 2 + 2 / 3 + 1 / 2) / 3)
  np.testing.assert_allclose(r["aAcc"], 4 / 7)
  # A class only predicted, never labelled: IoU 0 (counted), accuracy undefined (left out), as mmseg.
  cm = seg_eval.ConfusionMatrix(3)
  cm.update(np.array([0, 0, 2]), np.array([0, 0, 0]))
  r = cm.compute()
  np.testing.assert_allclose(r["IoU"][[0, 2]], [2 / 3, 0])
  assert np.isnan(r["IoU"][1]) and np.isnan(r["Acc"][1]) and np.isnan(r["Acc"][2])
  np.testing.assert_allclose([r["mIoU"], r["mAcc"]], [1 / 3, 2 / 3])


def test_confusion_matrix_errors_name_the_value():
  cm = seg_eval.ConfusionMatrix(3)
  with pytest.raises(UserError, match="label value 7 is not a class id 0..2 nor the ignore index 255"):
    cm.update(np.zeros((2, 2)), np.array([[0, 7], [1, 255]]))
  with pytest.raises(UserError, match="prediction value 3"):
    cm.update(np.array([0, 3]), np.array([0, 1]))
  with pytest.raises(UserError, match="shape"):
    cm.update(np.zeros((2, 3)), np.zeros((3, 2)))


def test_merge_processes_sums_counts_beyond_32_bits(monkeypatch):
  from jax.experimental import multihost_utils
  cm = seg_eval.ConfusionMatrix(2)
  cm.merge_processes()  # one process: nothing to do
  cm.matrix[:] = [[3_000_000_000, 5], [7, 2 ** 31 + 1]]
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: np.stack([x, x]))  # two equal processes
  cm.merge_processes()
  np.testing.assert_array_equal(cm.matrix, [[6_000_000_000, 10], [14, 2 ** 32 + 2]])


def linear_head(num_in=3, num_classes=5, seed=0):
  """A fixed per-pixel linear map: translation-equivariant, so windows must reproduce the whole image."""
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(num_in, num_classes)), jnp.float32)
  b = jnp.asarray(rng.normal(size=num_classes), jnp.float32)
  shapes = []

  @jax.jit
  def apply(x):
    return jnp.einsum("nhwc,ck->nhwk", x, w) + b

  def apply_fn(x):
    shapes.append(tuple(x.shape))
    return apply(x)
  return apply_fn, shapes


def test_window_grid_covers_a_non_divisible_size_as_mmseg():
  # 11 rows, crop 4, stride 3: ceil((11 - 4) / 3) + 1 = 4 windows, the last moved back to end at the border.
  assert [w[:2] for w in seg_eval.window_grid(11, 4, 4, 3)] == [(0, 4), (3, 7), (6, 10), (7, 11)]
  count = np.zeros((11, 14), int)
  windows = seg_eval.window_grid(11, 14, (4, 5), (3, 4))
  for y1, y2, x1, x2 in windows:
    assert (y2 - y1, x2 - x1) == (4, 5)
    count[y1:y2, x1:x2] += 1
  np.testing.assert_array_equal(count[:, 0], [1, 1, 1, 2, 1, 1, 2, 2, 2, 2, 1])
  # Columns: ceil((14 - 5) / 4) + 1 = 4 windows at 0, 4, 8 and 9 (moved back from 12).
  np.testing.assert_array_equal(count[0], [1, 1, 1, 1, 2, 1, 1, 1, 2, 2, 2, 2, 2, 1])
  assert len(windows) == 4 * 4 and count.min() >= 1


def test_sliding_window_equals_whole_image_inference():
  apply_fn, shapes = linear_head()
  x = np.random.default_rng(1).normal(size=(2, 23, 31, 3)).astype(np.float32)
  whole = np.asarray(apply_fn(x))
  shapes.clear()
  out = seg_eval.sliding_window(apply_fn, x, 5, (8, 10), (5, 7))
  assert out.shape == (2, 23, 31, 5)
  np.testing.assert_allclose(np.asarray(out), whole, atol=1e-6)
  assert set(shapes) == {(2, 8, 10, 3)} and len(shapes) == len(seg_eval.window_grid(23, 31, (8, 10), (5, 7)))
  # An image smaller than the crop is padded to it and the logits cropped back.
  shapes.clear()
  small = seg_eval.sliding_window(apply_fn, x[:1, :5, :7], 5, (8, 10), (5, 7))
  assert small.shape == (1, 5, 7, 5) and shapes == [(1, 8, 10, 3)]
  np.testing.assert_allclose(np.asarray(small), whole[:1, :5, :7], atol=1e-6)
  with pytest.raises(UserError, match="expected"):
    seg_eval.sliding_window(apply_fn, x, 4, 8, 5)


def test_sliding_window_upsamples_low_resolution_logits():
  # A model whose logits come at half resolution: each window's logits are resized to the crop (mmseg's
  # encode_decode), so a constant map stays constant.
  out = seg_eval.sliding_window(lambda x: jnp.ones((x.shape[0], x.shape[1] // 2, x.shape[2] // 2, 3)) * 2,
                                np.zeros((1, 12, 12, 3), np.float32), 3, 8, 4)
  np.testing.assert_allclose(np.asarray(out), 2.0)


def test_resize_logits_and_jax_image_resize_match_pytorch_align_corners_false():
  x = np.random.default_rng(0).normal(size=(2, 7, 9, 4)).astype(np.float32)
  for size in ((23, 31), (5, 4), (3, 13)):  # up, down, both
    theirs = F.interpolate(torch.tensor(x).permute(0, 3, 1, 2), size=size, mode="bilinear",
                           align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(seg_eval.resize_logits(x, size)), theirs, atol=1e-5)
    if size != (3, 13):
      jax_resize = jax.image.resize(x, (2, *size, 4), "bilinear", antialias=False)
      np.testing.assert_allclose(np.asarray(jax_resize), theirs, atol=1e-5)


def test_predict_drops_padding_and_resizes_to_the_original_size():
  rng = np.random.default_rng(0)
  logits = np.full((2, 16, 16, 3), -10.0, np.float32)
  logits[:, :, :, 2] = 100.0  # the padding, which must not leak into the prediction
  content = rng.normal(size=(2, 12, 8, 3)).astype(np.float32)
  logits[0, :12, :8] = content[0]
  logits[1, :6, :4] = content[1, :6, :4]
  preds = seg_eval.predict(logits, [[12, 8], [6, 4]], [[24, 16], [6, 4]])
  assert [p.shape for p in preds] == [(24, 16), (6, 4)] and preds[0].dtype == np.int32
  up = F.interpolate(torch.tensor(content[:1]).permute(0, 3, 1, 2), size=(24, 16), mode="bilinear",
                     align_corners=False)
  np.testing.assert_array_equal(preds[0], up.argmax(1)[0].numpy())
  np.testing.assert_array_equal(preds[1], content[1, :6, :4].argmax(-1))
  np.testing.assert_array_equal(seg_eval.predict(logits[1], np.array([6, 4]), np.array([6, 4])), preds[1])


def test_multi_scale_flip_averages_softmax_at_the_original_size():
  head, _ = linear_head(seed=2)
  x = np.random.default_rng(3).normal(size=(1, 12, 16, 3)).astype(np.float32)

  @jax.jit
  def apply_fn(x):  # a linear map plus a left-to-right ramp, so that a mirrored view must be mirrored back
    ramp = jnp.linspace(-2, 2, x.shape[2])[None, None, :, None] * jnp.arange(5)
    return head(x) + ramp

  # Against the same recipe in PyTorch (image and logits resized with align_corners=False).
  scales = (1.0, 1.5)
  out = np.asarray(seg_eval.multi_scale_flip(apply_fn, x, scales, flip=True))
  image = torch.tensor(x).permute(0, 3, 1, 2)
  views = []
  for s in scales:
    scaled = F.interpolate(image, size=(int(12 * s + 0.5), int(16 * s + 0.5)), mode="bilinear", align_corners=False)
    for flip in (False, True):
      view = scaled.flip(3) if flip else scaled
      logits = torch.tensor(np.asarray(apply_fn(view.permute(0, 2, 3, 1).numpy()))).permute(0, 3, 1, 2)
      logits = logits.flip(3) if flip else logits
      views.append(F.interpolate(logits, size=(12, 16), mode="bilinear", align_corners=False).softmax(1))
  np.testing.assert_allclose(out, (sum(views) / 4).permute(0, 2, 3, 1).numpy(), atol=1e-5)
  assert np.abs(out - views[0].permute(0, 2, 3, 1).numpy()).max() > 1e-2  # the views differ
