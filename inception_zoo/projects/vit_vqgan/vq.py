"""Vector quantisation with a factorised, l2-normalised codebook (ViT-VQGAN's lookup).

Yu, Li, Koh, Zhang, Pang, Qin, Ku, Xu, Baldridge, Wu, "Vector-quantized Image Modeling with Improved
VQGAN", ICLR 2022 (arXiv:2110.04627), Sec. 3.2: the encoder output is projected linearly to a
low-dimensional code space (32-d for 8192 codes in the paper) where the nearest code is looked up, and
both the projected encodings and the codes are l2-normalised, so the Euclidean lookup becomes a cosine
one; the chosen code is projected back to the encoder's width. Gradients pass the lookup by the
straight-through estimator of VQ-VAE (van den Oord et al., NeurIPS 2017) and the loss is
||sg(z) - e||^2 + beta ||z - sg(e)||^2 with beta = 0.25.

With `code_dim=None` and `l2_normalize=False` this is VQ-VAE's / VQGAN's plain codebook in the input
width; its codes start uniform in [-1/K, 1/K] as in taming-transformers (our reading of the baseline
the paper compares against). Layout and numbers match lucidrains' vector-quantize-pytorch
`VectorQuantize(dim, K, codebook_dim=code_dim, use_cosine_sim=l2_normalize, rotation_trick=False)`
with its codebook frozen (tested): our `commitment` times beta is its loss. Our reading: the l2 codebook
is a trainable parameter normalised on use (the paper does not say how its codes are updated).
"""
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers.common import l2_normalize


def codebook_perplexity(indices, codebook_size: int) -> Tuple[jax.Array, jax.Array]:
  """exp(entropy) of the codes' empirical distribution (K when all are used evenly, 1 for one code)
  and the fraction of codes used at least once."""
  counts = jnp.bincount(indices.reshape(-1), length=codebook_size)
  p = counts / jnp.maximum(counts.sum(), 1)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return jnp.exp(entropy), jnp.mean(counts > 0)


def _symmetric_uniform(scale: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -scale, scale)


class VectorQuantizer(nn.Module):
  """(..., dim) -> (quantised (..., dim), aux): aux holds the code `indices`, the `loss` to add to the
  training loss, its `codebook` and `commitment` terms, `perplexity` and `usage`."""
  dim: int  # the encoder's width
  codebook_size: int
  code_dim: Optional[int] = None  # lookup width; None: `dim` (no projections)
  l2_normalize: bool = False
  beta: float = 0.25

  def setup(self):
    if self.codebook_size < 2:
      raise UserError(f"VectorQuantizer needs at least 2 codes; got codebook_size={self.codebook_size}")
    d = self.code_dim or self.dim
    self.factorised = d != self.dim
    if self.factorised:
      self.project_in = nn.Dense(d)
      self.project_out = nn.Dense(self.dim)
    init = nn.initializers.normal(1.0) if self.l2_normalize else _symmetric_uniform(1.0 / self.codebook_size)
    self.codebook = self.param("codebook", init, (self.codebook_size, d))

  def codes(self):
    return l2_normalize(self.codebook, eps=1e-6) if self.l2_normalize else self.codebook

  def __call__(self, z) -> Tuple[jax.Array, Dict[str, Any]]:
    if z.shape[-1] != self.dim:
      raise UserError(f"VectorQuantizer(dim={self.dim}) got inputs of width {z.shape[-1]}")
    if self.factorised:
      z = self.project_in(z)
    if self.l2_normalize:
      z = l2_normalize(z, eps=1e-6)
    codebook = self.codes()
    # argmin ||z - e||^2 = argmax z.e - ||e||^2 / 2
    scores = z @ codebook.T - 0.5 * jnp.sum(codebook ** 2, -1)
    indices = jnp.argmax(scores, -1)
    e = codebook[indices]
    codebook_loss = jnp.mean((jax.lax.stop_gradient(z) - e) ** 2)
    commitment = jnp.mean((z - jax.lax.stop_gradient(e)) ** 2)
    z_q = z + jax.lax.stop_gradient(e - z)  # straight-through: the decoder's gradient reaches z
    if self.factorised:
      z_q = self.project_out(z_q)
    perplexity, usage = codebook_perplexity(indices, self.codebook_size)
    return z_q, {"indices": indices, "loss": codebook_loss + self.beta * commitment,
                 "codebook": codebook_loss, "commitment": commitment,
                 "perplexity": perplexity, "usage": usage}

  def lookup(self, indices):
    """The quantised vectors of code `indices` in the encoder's width (stage 2's samples to decode)."""
    e = self.codes()[indices]
    return self.project_out(e) if self.factorised else e
