"""SimMIM: masked image modelling on a Swin Transformer V2 encoder.

Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu. "SimMIM: A Simple Framework for Masked Image Modeling",
CVPR 2022 (arXiv:2111.09886), the pre-training of Swin Transformer V2 (Liu et al. 2022, Sec. 3.4).

- Masking (Sec. 3.1, `random_masks`): the image is cut into `mask_patch_size` blocks (32 px at 192 px),
  exactly ceil(ratio * blocks) of them are masked (ratio 0.6), and the block mask is expanded to the
  encoder's patch grid, as the official `MaskGenerator`.
- Encoder: the patch embeddings of masked patches are replaced by one learnable mask token, before the
  stages (official `SwinTransformerV2ForSimMIM`); the encoder is the classification Swin V2 without its
  head, its parameters at the same paths, so `init_from` loads the pre-trained weights into a
  classifier (`ckpt.merge_weights` leaves out `ckpt.PRETRAINING_ONLY`: mask_token and decoder).
- Prediction head (Sec. 3.2): a linear 1x1 convolution from the stride-`s` output (s = 32 for the
  paper's four stages) to s*s*3 values per token, pixel-shuffled back to the image.
- Loss (Sec. 3.3, `masked_l1`): L1 on the masked pixels only, normalised by their count times the
  channels (official `(loss_recon * mask).sum() / (mask.sum() + 1e-5) / in_chans`).
"""
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import dense_init, pixel_shuffle
from inception_zoo.models.swinv2 import SwinTransformerV2
from inception_zoo.registry import create_model, register_model


def random_masks(key: jax.Array, batch: int, img_size: int, mask_patch_size: int, patch_size: int,
                 ratio: float) -> jax.Array:
  """(batch, n, n) bool masks over the encoder's n x n patch grid, True = masked; each row masks
  exactly ceil(ratio * blocks) of the (img_size / mask_patch_size)^2 blocks, chosen uniformly."""
  if img_size % mask_patch_size or mask_patch_size % patch_size:
    raise UserError(f"simmim: mask_patch_size {mask_patch_size} must divide the image size {img_size} "
                    f"and be a multiple of the model's patch_size {patch_size}")
  side = img_size // mask_patch_size
  blocks, scale = side * side, mask_patch_size // patch_size
  count = math.ceil(blocks * ratio)

  def one(k):
    chosen = jax.random.permutation(k, blocks)[:count]
    return jnp.zeros(blocks, bool).at[chosen].set(True).reshape(side, side)

  masks = jax.vmap(one)(jax.random.split(key, batch))
  return jnp.repeat(jnp.repeat(masks, scale, axis=1), scale, axis=2)


def masked_l1(images, reconstruction, mask, patch_size: int):
  """Mean absolute error over the masked pixels and channels of the batch (Sec. 3.3); `mask` is on
  the patch grid, each patch covering patch_size x patch_size pixels."""
  pixels = jnp.repeat(jnp.repeat(mask, patch_size, axis=1), patch_size, axis=2)[..., None]
  pixels = pixels.astype(jnp.float32)
  error = jnp.abs(images.astype(jnp.float32) - reconstruction.astype(jnp.float32))
  return jnp.sum(error * pixels) / (jnp.sum(pixels) + 1e-5) / images.shape[-1]


class SimMIM(nn.Module):
  """`__call__(images, mask=None, *, train)` -> `(reconstruction, features)`: the predicted image and
  the encoder's features. `mask` (B, n, n) bool over the patch grid; None replaces nothing."""
  encoder: SwinTransformerV2  # num_classes=0, global_pool='': its output is the normed final map

  @property
  def stride(self) -> int:
    return self.encoder.patch_size * 2 ** (len(self.encoder.depths) - 1)

  def setup(self):
    if self.encoder.num_classes or self.encoder.global_pool:
      raise UserError("simmim: the encoder must be built with num_classes=0 and global_pool=''")
    # The encoder's parameters sit at the top level, where a classification Swin V2 has them.
    nn.share_scope(self, self.encoder)
    self.mask_token = self.param("mask_token", nn.initializers.truncated_normal(0.02),
                                 (self.encoder.embed_dim,))
    self.decoder = nn.Conv(self.stride ** 2 * 3, (1, 1), kernel_init=dense_init,
                           dtype=self.encoder.dtype)

  def __call__(self, images, mask: Optional[jax.Array] = None, *, train: bool = False):
    tokens, features = self.encoder(images, train=train, mask=mask, mask_token=self.mask_token)
    return pixel_shuffle(self.decoder(tokens), self.stride), features


def simmim(encoder_name: str, **options) -> SimMIM:
  """SimMIM around the registered Swin V2 `encoder_name` built with `options` (img_size, ...)."""
  return SimMIM(create_model(encoder_name, num_classes=0, global_pool="", **options))


def _register(encoder_name: str):
  """`simmim_<encoder>`: create_model options are the Swin V2 encoder's (img_size, window_size, ...)."""
  def build(**options) -> SimMIM:
    return simmim(encoder_name, **options)
  build.__name__ = f"simmim_{encoder_name}"
  register_model(build, tags=("self-supervised",), options=SwinTransformerV2)


for _encoder in ("swinv2_tiny_window8_256", "swinv2_small_window8_256", "swinv2_base_window8_256"):
  _register(_encoder)

