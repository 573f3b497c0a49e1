"""ViT-VQGAN: the stage-1 image tokenizer of Vector-quantized Image Modeling, and its losses.

Yu, Li, Koh, Zhang, Pang, Qin, Ku, Xu, Baldridge, Wu, "Vector-quantized Image Modeling with Improved
VQGAN", ICLR 2022 (arXiv:2110.04627), Sec. 3. Images are cut into non-overlapping 8x8 patches (256 px ->
32x32 tokens), embedded linearly and encoded by a ViT of pre-LN blocks; a two-layer feed-forward head
with a tanh between maps each token to the latent, which `layers.vq.VectorQuantizer` snaps to a
factorised, l2-normalised code (8192 codes, 32-d lookup). The decoder mirrors the encoder and ends in
the same tanh head back to pixels. Sec. 3.3's loss is
  L = L_VQ + 0.1 L_adv + 0.1 L_perceptual + 0.1 L_logit-laplace + 1.0 L_2,
L_adv StyleGAN's non-saturating loss against a StyleGAN discriminator.

Our reading where the paper is brief: the decoder predicts, per pixel and channel, the location and log
scale of DALL-E's logit-Laplace distribution (Ramesh et al. 2021, Sec. A.3, pixels mapped into
[0.1, 0.9]); the reconstruction is the mapped-back sigmoid of the location, so L_2 and the logit-Laplace
NLL score the same output. The perceptual loss is LPIPS's form without its learned channel weights
(squared distance of channel-normalised features, averaged over positions, summed over taps) on the
feature taps of any zoo network (the paper's LPIPS uses VGG). The discriminator is StyleGAN2's residual
one without the minibatch-std layer; R1 regularises it (`r1_penalty`). Sizes: Table 1 of the paper
(`SIZES`, encoder and decoder chosen separately: ViT-VQGAN-SS is small/small, -SL small/large).
"""
from typing import Any, Callable, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import Mlp, dense_init
from inception_zoo.projects.vit_vqgan.vq import VectorQuantizer
from inception_zoo.registry import register_model

# (depth, width, heads, MLP width) of the paper's Table 1 transformers.
SIZES = {"small": (8, 512, 8, 2048), "base": (12, 768, 12, 3072), "large": (32, 1280, 16, 5120)}
LOGIT_LAPLACE_EPS = 0.1  # DALL-E's pixel map x -> (1 - 2 eps) x + eps
LOSS_WEIGHTS = {"l2": 1.0, "logit_laplace": 0.1, "perceptual": 0.1, "adversarial": 0.1}  # Sec. 3.3


class Block(nn.Module):
  """Pre-LN transformer block: x + MHSA(LN(x)), then x + MLP(LN(x)); `mask` (causal for stage 2)."""
  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x, mask=None):
    y = nn.LayerNorm(name="norm1")(x)
    x = x + nn.MultiHeadDotProductAttention(self.num_heads, kernel_init=dense_init, name="attn")(
        y, y, mask=mask)
    return x + Mlp(self.mlp_dim, name="mlp")(nn.LayerNorm(name="norm2")(x), train=False)


class Transformer(nn.Module):
  """Blocks over (B, N, width) tokens; returns the final LayerNorm's tokens and every block's output."""
  depth: int
  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x, mask=None):
    outs = []
    for i in range(self.depth):
      x = Block(self.num_heads, self.mlp_dim, name=f"block{i}")(x, mask)
      outs.append(x)
    return nn.LayerNorm(name="norm")(x), outs


def patchify(x, p: int):
  b, h, w, c = x.shape
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // p, w // p, p * p * c)


def unpatchify(x, p: int):
  b, gh, gw, d = x.shape
  c = d // (p * p)
  return x.reshape(b, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * p, gw * p, c)


def _size(size) -> Tuple[int, int, int, int]:
  if isinstance(size, str):
    if size not in SIZES:
      raise UserError(f"unknown ViT-VQGAN size '{size}' ({', '.join(SIZES)} or (depth, width, heads, mlp))")
    return SIZES[size]
  return tuple(size)


class ViTVQGAN(nn.Module):
  """(B, H, W, C) pixels in [0, 1] -> (reconstruction in [0, 1], aux): aux holds the logit-Laplace
  `mu` and `log_scale`, the code `indices` (B, H/p, W/p) and the quantiser's terms (`vq_loss`,
  `perplexity`, `usage`)."""
  image_size: int = 256
  patch_size: int = 8
  channels: int = 3
  encoder: Any = "small"  # a SIZES name or (depth, width, heads, mlp)
  decoder: Any = "small"
  latent_dim: int = 256  # the encoder's output width before the lookup projection (our choice)
  codebook_size: int = 8192
  code_dim: Any = 32  # None: a plain codebook in latent_dim
  l2_normalize: bool = True
  beta: float = 0.25

  def setup(self):
    p = self.patch_size
    if self.image_size % p:
      raise UserError(f"ViT-VQGAN image_size {self.image_size} is not a multiple of patch_size {p}")
    self.grid = self.image_size // p
    (ed, ew, eh, em), (dd, dw, dh, dm) = _size(self.encoder), _size(self.decoder)
    pos = nn.initializers.truncated_normal(0.02)
    self.enc_embed = nn.Dense(ew, kernel_init=dense_init)
    self.enc_pos = self.param("enc_pos", pos, (1, self.grid * self.grid, ew))
    self.enc = Transformer(ed, eh, em)
    self.enc_head = nn.Sequential([nn.Dense(ew, kernel_init=dense_init), jnp.tanh,
                                   nn.Dense(self.latent_dim, kernel_init=dense_init)])
    self.quantizer = VectorQuantizer(self.latent_dim, self.codebook_size, self.code_dim, self.l2_normalize,
                                     self.beta)
    self.dec_embed = nn.Dense(dw, kernel_init=dense_init)
    self.dec_pos = self.param("dec_pos", pos, (1, self.grid * self.grid, dw))
    self.dec = Transformer(dd, dh, dm)
    # Two values per pixel and channel: the logit-Laplace location and log scale.
    self.dec_head = nn.Sequential([nn.Dense(dw, kernel_init=dense_init), jnp.tanh,
                                   nn.Dense(p * p * self.channels * 2, kernel_init=dense_init)])

  def encode_latents(self, x):
    if x.ndim != 4 or x.shape[1:] != (self.image_size, self.image_size, self.channels):
      raise UserError(f"ViT-VQGAN expects (B, {self.image_size}, {self.image_size}, {self.channels}) "
                      f"images; got {x.shape}")
    b = x.shape[0]
    t = self.enc_embed(patchify(x * 2.0 - 1.0, self.patch_size).reshape(b, self.grid * self.grid, -1))
    t, _ = self.enc(t + self.enc_pos)
    return self.enc_head(t).reshape(b, self.grid, self.grid, self.latent_dim)

  def decode_latents(self, z):
    b = z.shape[0]
    t, _ = self.dec(self.dec_embed(z.reshape(b, -1, z.shape[-1])) + self.dec_pos)
    out = unpatchify(self.dec_head(t).reshape(b, self.grid, self.grid, -1), self.patch_size)
    mu, log_scale = jnp.split(out, 2, axis=-1)
    return logit_laplace_mean(mu), mu, log_scale

  def __call__(self, x, *, train: bool = False):
    del train  # no dropout or batch statistics
    z_q, vq = self.quantizer(self.encode_latents(x))
    recon, mu, log_scale = self.decode_latents(z_q)
    return recon, {"mu": mu, "log_scale": log_scale, "indices": vq["indices"], "vq_loss": vq["loss"],
                   "perplexity": vq["perplexity"], "usage": vq["usage"], "commitment": vq["commitment"]}

  def encode(self, x):
    """Images -> code indices (B, H/p, W/p): stage 2's tokens."""
    return self.quantizer(self.encode_latents(x))[1]["indices"]

  def decode(self, indices):
    """Code indices (B, H/p, W/p) -> images in [0, 1]."""
    return self.decode_latents(self.quantizer.lookup(indices))[0]


def logit_laplace_mean(mu, eps: float = LOGIT_LAPLACE_EPS):
  """The pixel of location `mu`: sigmoid mapped back from [eps, 1 - eps] to [0, 1] (DALL-E's unmap)."""
  return jnp.clip((jax.nn.sigmoid(mu) - eps) / (1 - 2 * eps), 0.0, 1.0)


def logit_laplace_nll(x, mu, log_scale, eps: float = LOGIT_LAPLACE_EPS):
  """Mean negative log density of pixels `x` in [0, 1] (mapped into [eps, 1 - eps]) under the
  logit-Laplace distribution: log(2 b x (1 - x)) + |logit(x) - mu| / b, b = exp(log_scale)."""
  y = (1 - 2 * eps) * x + eps
  nll = jnp.log(2.0) + log_scale + jnp.log(y * (1 - y)) + jnp.abs(jnp.log(y / (1 - y)) - mu) * jnp.exp(-log_scale)
  return jnp.mean(nll)


def perceptual_loss(features_fn: Callable[[jax.Array], Dict[str, jax.Array]], x, y,
                    taps: Sequence[str] = ("C1", "C2", "C3", "C4", "C5")):
  """LPIPS without learned weights: for each feature tap of `features_fn`, the squared distance of
  channel-normalised features, averaged over positions and images, summed over taps."""
  fx, fy = features_fn(x), features_fn(y)
  missing = [t for t in taps if t not in fx]
  if missing:
    raise UserError(f"perceptual_loss: the feature network has no taps {missing} (has {sorted(fx)})")
  unit = lambda f: f / (jnp.linalg.norm(f, axis=-1, keepdims=True) + 1e-10)
  return sum(jnp.mean(jnp.sum((unit(fx[t]) - unit(fy[t])) ** 2, -1)) for t in taps)


class Discriminator(nn.Module):
  """StyleGAN2's residual discriminator (no minibatch std): 1x1 from RGB, residual blocks (two 3x3
  convolutions and 2x average pooling, a 1x1 pooled skip, sum / sqrt 2), then Dense, Dense -> logit."""
  widths: Sequence[int] = (64, 128, 256, 256)

  @nn.compact
  def __call__(self, x):
    act = lambda h: nn.leaky_relu(h, 0.2)
    pool = lambda h: nn.avg_pool(h, (2, 2), (2, 2))
    h = act(nn.Conv(self.widths[0], (1, 1), name="from_rgb")(x * 2.0 - 1.0))
    for i, w in enumerate(self.widths):
      skip = nn.Conv(w, (1, 1), use_bias=False, name=f"skip{i}")(pool(h))
      h = act(nn.Conv(h.shape[-1], (3, 3), name=f"conv{i}a")(h))
      h = pool(act(nn.Conv(w, (3, 3), name=f"conv{i}b")(h)))
      h = (h + skip) / jnp.sqrt(2.0)
    h = act(nn.Dense(self.widths[-1], name="fc")(h.reshape(h.shape[0], -1)))
    return nn.Dense(1, name="out")(h)[:, 0]


def generator_adversarial_loss(fake_logits):
  """StyleGAN's non-saturating generator loss: softplus(-D(G(z)))."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def discriminator_loss(real_logits, fake_logits):
  """The discriminator's logistic loss: softplus(D(fake)) + softplus(-D(real))."""
  return jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real):
  """R1 (Mescheder et al. 2018): mean over images of ||grad_x D(x)||^2 on real images (weight gamma / 2)."""
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(real)
  return jnp.mean(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, -1))


def vqgan_loss(x, recon, aux, *, weights: Dict[str, float] = LOSS_WEIGHTS, perceptual_fn=None,
               fake_logits=None) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """Sec. 3.3's stage-1 loss from a ViTVQGAN output: L_VQ + weighted l2, logit-Laplace, perceptual
  (`perceptual_fn(x, recon)`) and adversarial (`fake_logits` = D(recon)) terms; a term with weight 0
  is not computed. Returns (total, terms)."""
  unknown = set(weights) - set(LOSS_WEIGHTS)
  if unknown:
    raise UserError(f"vqgan_loss: unknown loss terms {sorted(unknown)} (known: {sorted(LOSS_WEIGHTS)})")
  terms = {"vq": aux["vq_loss"]}
  if weights.get("l2", 0.0):
    terms["l2"] = jnp.mean((recon - x) ** 2)
  if weights.get("logit_laplace", 0.0):
    terms["logit_laplace"] = logit_laplace_nll(x, aux["mu"], aux["log_scale"])
  if weights.get("perceptual", 0.0):
    if perceptual_fn is None:
      raise UserError("vqgan_loss: a perceptual weight needs perceptual_fn")
    terms["perceptual"] = perceptual_fn(x, recon)
  if weights.get("adversarial", 0.0):
    if fake_logits is None:
      raise UserError("vqgan_loss: an adversarial weight needs fake_logits = D(recon)")
    terms["adversarial"] = generator_adversarial_loss(fake_logits)
  total = terms["vq"] + sum(weights[k] * v for k, v in terms.items() if k != "vq")
  return total, terms


@register_model(tags=("generative",))
def vit_vqgan(**kwargs) -> ViTVQGAN:
  return ViTVQGAN(**kwargs)
