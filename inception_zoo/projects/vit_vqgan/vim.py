"""VIM, stage 2 of Vector-quantized Image Modeling: a decoder-only transformer over image tokens.

Yu et al., "Vector-quantized Image Modeling with Improved VQGAN", ICLR 2022 (arXiv:2110.04627), Sec. 4:
the ViT-VQGAN tokens of an image, in raster order, are modelled autoregressively by a decoder-only
transformer (VIM-Base: 24 blocks of width 1536; VIM-Large: 36 of width 2048, Table 1 as we read it)
trained with the next-token cross-entropy; for class-conditional generation a class-id token is
prepended. Sec. 4.2: the linear probe reads the average over positions of an intermediate block's
output (the paper picks the best block, about the middle of the network), with no class information.

Our reading: one start token per class plus one "no class" start token (index `num_classes`), so the
same network is the unconditional model used by the probe when the class is dropped in training
(`class_dropout` in the experiment); the blocks are the stage-1 pre-LN blocks with a causal mask; a
linear head over the final LayerNorm predicts the next code. Sampling runs the whole fixed-length
sequence at every step inside one `lax.scan` (no key/value cache: simple, and one compiled program).
"""
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import dense_init
from inception_zoo.projects.vit_vqgan.vit_vqgan import Transformer
from inception_zoo.registry import register_model

# (depth, width, heads, MLP width).
SIZES = {"base": (24, 1536, 16, 6144), "large": (36, 2048, 32, 8192)}


class VIM(nn.Module):
  """(B, L) code tokens and (B,) class ids (`num_classes` = none) -> (next-token logits (B, L, K),
  features): features holds `probe`, the mean over positions of block `probe_layer`'s output."""
  codebook_size: int = 8192
  seq_len: int = 1024
  num_classes: int = 1000
  size: Any = "base"  # a SIZES name or (depth, width, heads, mlp)
  probe_layer: int = -1  # -1: the middle block

  def setup(self):
    depth, width, heads, mlp = SIZES[self.size] if isinstance(self.size, str) else self.size
    self.depth = depth
    self.token_embed = nn.Embed(self.codebook_size, width, embedding_init=dense_init)
    self.class_embed = nn.Embed(self.num_classes + 1, width, embedding_init=dense_init)
    self.pos = self.param("pos", nn.initializers.truncated_normal(0.02), (1, self.seq_len, width))
    self.transformer = Transformer(depth, heads, mlp)
    self.head = nn.Dense(self.codebook_size, kernel_init=dense_init)

  def __call__(self, tokens, labels) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    if tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
      raise UserError(f"VIM expects (batch, {self.seq_len}) tokens; got {tokens.shape}")
    # Position i sees the start token and tokens < i, and predicts token i.
    x = jnp.concatenate([self.class_embed(labels)[:, None], self.token_embed(tokens[:, :-1])], 1) + self.pos
    h, blocks = self.transformer(x, nn.make_causal_mask(tokens))
    layer = self.probe_layer if self.probe_layer >= 0 else self.depth // 2
    return self.head(h), {"probe": jnp.mean(blocks[layer], axis=1)}


def next_token_loss(logits, tokens):
  """Mean cross-entropy (nats per token) of the codes under the model's next-token logits."""
  logp = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(logp, tokens[..., None], -1))


def sample(model: VIM, params, labels, key, temperature: float = 1.0):
  """Raster-order samples (B, L) for class ids `labels`: temperature 0 is greedy."""
  b, n = labels.shape[0], model.seq_len

  def step(tokens, i):
    logits = model.apply({"params": params}, tokens, labels)[0][:, i]
    if temperature == 0:
      nxt = jnp.argmax(logits, -1)
    else:
      nxt = jax.random.categorical(jax.random.fold_in(key, i), logits / temperature)
    return tokens.at[:, i].set(nxt), None

  tokens, _ = jax.lax.scan(step, jnp.zeros((b, n), jnp.int32), jnp.arange(n))
  return tokens


@register_model(tags=("generative",))
def vim(**kwargs) -> VIM:
  return VIM(**kwargs)
