"""Transformer pieces in timm's layout (module names `fc1` / `fc2`, PyTorch's LayerNorm numerics), shared
by Swin V2, iFormer, DRCT and the ViT-VQGAN / VIM transformers."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.layers.common import dense_init


def layer_norm(dtype, name: str, *, eps: float = 1e-5, init: float = 1.0) -> nn.LayerNorm:
  """PyTorch's LayerNorm (eps 1e-5 by default; the official iFormer uses 1e-6) with its scale
  initialised at `init` (Swin V2's post-norms start at 0)."""
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, scale_init=nn.initializers.constant(init),
                      dtype=dtype, name=name)


class Mlp(nn.Module):
  """timm's Mlp: Linear, GELU (exact), dropout, Linear, dropout; the output keeps the input's width."""
  hidden: int
  drop_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    out = x.shape[-1]
    x = nn.Dense(self.hidden, kernel_init=dense_init, dtype=self.dtype, name="fc1")(x)
    x = nn.Dropout(self.drop_rate, deterministic=not train)(nn.gelu(x, approximate=False))
    x = nn.Dense(out, kernel_init=dense_init, dtype=self.dtype, name="fc2")(x)
    return nn.Dropout(self.drop_rate, deterministic=not train)(x)
