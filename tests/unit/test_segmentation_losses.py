"""The segmentation losses against PyTorch: cross-entropy with an ignore index, and CPS's OHEM transcribed
line by line from TorchSemiSeg's `furnace/seg_opr/loss_opr.py` (`ProbOhemCrossEntropy2d`)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inception_zoo.train.segmentation import IGNORE, ohem_cross_entropy, pixel_cross_entropy


def prob_ohem_cross_entropy_2d(pred, target, thresh, min_kept, ignore_label=255):
  """TorchSemiSeg's ProbOhemCrossEntropy2d.forward (reduction 'mean', no class weights)."""
  b, c, h, w = pred.size()
  target = target.view(-1)
  valid_mask = target.ne(ignore_label)
  target = target * valid_mask.long()
  num_valid = valid_mask.sum()
  prob = F.softmax(pred, dim=1)
  prob = (prob.transpose(0, 1)).reshape(c, -1)
  if min_kept > num_valid:
    pass
  elif num_valid > 0:
    prob = prob.masked_fill_(~valid_mask, 1)
    mask_prob = prob[target, torch.arange(len(target), dtype=torch.long)]
    threshold = thresh
    if min_kept > 0:
      index = mask_prob.argsort()
      threshold_index = index[min(len(index), min_kept) - 1]
      if mask_prob[threshold_index] > thresh:
        threshold = mask_prob[threshold_index]
      kept_mask = mask_prob.le(threshold)
      target = target * kept_mask.long()
      valid_mask = valid_mask * kept_mask
  target = target.masked_fill_(~valid_mask, ignore_label)
  target = target.view(b, h, w)
  return F.cross_entropy(pred, target, ignore_index=ignore_label)


def batch(seed: int, ignore_fraction: float = 0.2, classes: int = 5, scale: float = 3.0):
  rng = np.random.default_rng(seed)
  logits = (scale * rng.standard_normal((2, 12, 10, classes))).astype(np.float32)
  labels = rng.integers(0, classes, (2, 12, 10))
  labels[rng.uniform(size=labels.shape) < ignore_fraction] = IGNORE
  return logits, labels


def torch_of(logits, labels):
  return torch.from_numpy(logits).permute(0, 3, 1, 2), torch.from_numpy(labels).long()


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_ignores_the_ignore_index_as_pytorch(seed):
  logits, labels = batch(seed)
  expected = F.cross_entropy(*torch_of(logits, labels), ignore_index=IGNORE).item()
  assert float(pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_of_an_unlabelled_batch_is_zero_not_nan():
  logits, labels = batch(0, ignore_fraction=1.0)
  assert float(pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))) == 0.0


@pytest.mark.parametrize("thresh,min_kept", [(0.7, 50), (0.7, 150), (0.3, 10), (0.7, 1000), (0.9, 0)])
def test_ohem_equals_cps(thresh, min_kept):
  """Each branch of CPS's rule: the threshold raised to the min_kept-th probability (min_kept 150), kept
  (min_kept 10 at 0.3: many hard pixels), OHEM off (fewer labelled pixels than min_kept, or min_kept 0, as
  CPS's code has it)."""
  logits, labels = batch(3)
  expected = prob_ohem_cross_entropy_2d(*torch_of(logits, labels), thresh, min_kept).item()
  got = float(ohem_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), thresh, min_kept))
  assert got == pytest.approx(expected, rel=1e-5)
  # OHEM is not plain cross-entropy here, except where it is off
  plain = float(pixel_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
  assert (got == pytest.approx(plain, rel=1e-6)) == (min_kept > (labels != IGNORE).sum() or min_kept == 0)
