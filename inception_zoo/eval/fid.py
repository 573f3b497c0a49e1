"""FID and Inception Score of generated images, from the zoo's Inception-v3.

Frechet Inception Distance (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium", NeurIPS 2017): ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of the
Gaussians fitted to Inception pool features. Inception Score (Salimans et al., "Improved Techniques for
Training GANs", NeurIPS 2016): exp E_x KL(p(y|x) || p(y)), averaged over `splits` (10 in the paper).
ViT-VQGAN (Yu et al., ICLR 2022) reports both on 50k samples at 256 px. The pool features are
`inception_v3`'s `pre_logits` (2048-d); the standard numbers need the TF-slim / pytorch-fid weights
converted into the zoo's model, which this module does not fetch.
"""
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError


def feature_stats(features) -> Tuple[np.ndarray, np.ndarray]:
  """Mean and (unbiased) covariance of (N, D) features, in float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise UserError(f"feature_stats needs (N >= 2, D) features; got shape {f.shape}")
  return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b) -> float:
  """Frechet distance of two Gaussians. tr (S_a S_b)^(1/2) = sum of the square roots of the eigenvalues
  of the symmetric S_a^(1/2) S_b S_a^(1/2) (same spectrum; avoids a non-symmetric matrix square root)."""
  w, v = np.linalg.eigh(sigma_a)
  root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  middle = np.linalg.eigvalsh(root_a @ sigma_b @ root_a)
  tr_covmean = np.sum(np.sqrt(np.clip(middle, 0, None)))
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * tr_covmean)


def fid(features_a, features_b) -> float:
  """FID between two sets of (N, D) pool features."""
  return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def inception_score(probs, splits: int = 10) -> Tuple[float, float]:
  """Mean and standard deviation over `splits` of exp(mean KL(p(y|x) || p(y))) for (N, C) class
  probabilities."""
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or len(p) < splits:
    raise UserError(f"inception_score needs (N >= splits={splits}, classes) probabilities; got {p.shape}")
  scores = []
  for part in np.array_split(p, splits):
    marginal = part.mean(0, keepdims=True)
    kl = np.sum(part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(marginal, 1e-12, None))), 1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def inception_outputs(model, variables, images, *, batch_size: int = 100, size: int = 299):
  """(pool features, class probabilities) of `model` (the zoo's inception_v3) on images in [0, 1],
  resized bilinearly to `size` and mapped to [-1, 1]; one compiled call per batch shape."""
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise UserError(f"inception_outputs expects (N, H, W, 3) images in [0, 1]; got {images.shape}")

  @jax.jit
  def apply(x):
    x = jax.image.resize(x, (x.shape[0], size, size, 3), "bilinear") * 2.0 - 1.0
    logits, features = model.apply(variables, x, train=False)
    return features["pre_logits"], jax.nn.softmax(logits)

  outs = [apply(jnp.asarray(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
  return tuple(np.concatenate([np.asarray(o[k]) for o in outs]) for k in (0, 1))
