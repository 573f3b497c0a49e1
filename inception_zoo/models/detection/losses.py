"""Elementwise detection losses with PyTorch's definitions (`torch.nn.functional`), for masked reductions.

They return per-element losses; the detectors sum them under their sampling masks and divide as torchvision does.
"""
import jax
import jax.numpy as jnp


def smooth_l1(x, beta: float):
  """`F.smooth_l1_loss(input, target, beta, reduction='none')` of x = input - target."""
  ax = jnp.abs(x)
  return jnp.where(ax < beta, 0.5 * x * x / beta, ax - 0.5 * beta)


def sigmoid_bce(logits, targets):
  """`F.binary_cross_entropy_with_logits(logits, targets, reduction='none')`, stable for large |logits|."""
  return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def softmax_cross_entropy(logits, labels):
  """`F.cross_entropy(logits, labels, reduction='none')` over the last axis, labels as integers."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
