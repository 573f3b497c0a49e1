"""Siamese encoders of NGAME (Dahiya, Gupta, Saini, Soni, Wang, Dave, Jiao, K, Dey, Singh, Hada, Jain,
Paliwal, Mittal, Mehta, Ramjee, Agarwal, Kar, Varma, "NGAME: Negative Mining-aware Mini-batching for
Extreme Classification", WSDM 2023): one encoder, shared by the points (queries, product titles) and the
labels (their titles), whose unit-norm outputs are compared by cosine similarity.

Full setting: a 6-layer DistilBERT (768 wide, 12 heads; the authors start from
`sentence-transformers/msmarco-distilbert-base-v4`), mean-pooled over the non-padding tokens and
normalised, as the official `STransformer`. `DistilBertEncoder` keeps the Hugging Face module names, so
`distilbert_to_flax` fills it from a `transformers.DistilBertModel` state dict and `load_distilbert` from a
Hugging Face model directory (`config.json` + `model.safetensors`, read with numpy: no torch). CPU setting:
`MLPEncoder`, a two-layer MLP of dense synthetic features.
"""
import json
import os
import re
from typing import Any, Dict, Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.convert import read_safetensors, torch_to_flax_array
from inception_zoo.errors import UserError
from inception_zoo.layers import l2_normalize
from inception_zoo.pytree import path_str

LN_EPS = 1e-12  # DistilBERT's LayerNorm epsilon


class _Attention(nn.Module):
  dim: int
  heads: int
  dropout: float

  @nn.compact
  def __call__(self, x, mask, train: bool):
    b, t, _ = x.shape
    split = lambda z: z.reshape(b, t, self.heads, self.dim // self.heads)
    q = split(nn.Dense(self.dim, name="q_lin")(x)) / np.sqrt(self.dim // self.heads)
    k, v = split(nn.Dense(self.dim, name="k_lin")(x)), split(nn.Dense(self.dim, name="v_lin")(x))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = nn.Dropout(self.dropout, deterministic=not train)(jax.nn.softmax(logits, axis=-1))
    context = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, self.dim)
    return nn.Dense(self.dim, name="out_lin")(context)


class _FFN(nn.Module):
  dim: int
  hidden: int
  dropout: float

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.gelu(nn.Dense(self.hidden, name="lin1")(x), approximate=False)
    return nn.Dropout(self.dropout, deterministic=not train)(nn.Dense(self.dim, name="lin2")(h))


class _Block(nn.Module):
  """Post-norm block: x = LN(x + attention(x)); x = LN(x + FFN(x))."""
  dim: int
  heads: int
  hidden: int
  dropout: float

  @nn.compact
  def __call__(self, x, mask, train: bool):
    x = nn.LayerNorm(LN_EPS, name="sa_layer_norm")(
        x + _Attention(self.dim, self.heads, self.dropout, name="attention")(x, mask, train))
    return nn.LayerNorm(LN_EPS, name="output_layer_norm")(
        x + _FFN(self.dim, self.hidden, self.dropout, name="ffn")(x, train))


class _Embeddings(nn.Module):
  vocab_size: int
  max_positions: int
  dim: int
  dropout: float

  @nn.compact
  def __call__(self, input_ids, train: bool):
    x = nn.Embed(self.vocab_size, self.dim, name="word_embeddings")(input_ids)
    x = x + nn.Embed(self.max_positions, self.dim, name="position_embeddings")(jnp.arange(input_ids.shape[1]))
    return nn.Dropout(self.dropout, deterministic=not train)(nn.LayerNorm(LN_EPS, name="LayerNorm")(x))


class _Transformer(nn.Module):
  layers: int
  dim: int
  heads: int
  hidden: int
  dropout: float

  @nn.compact
  def __call__(self, x, mask, train: bool):
    for i in range(self.layers):
      x = _Block(self.dim, self.heads, self.hidden, self.dropout, name=f"layer_{i}")(x, mask, train)
    return x


class DistilBertEncoder(nn.Module):
  """DistilBERT (Sanh et al. 2019) with NGAME's pooling: returns (unit-norm embedding (B, dim),
  {'last_hidden_state': (B, T, dim)}); `pooling` 'mean' (over attention_mask, the authors' choice) or
  'cls' (the first token)."""
  vocab_size: int = 30522
  max_positions: int = 512
  dim: int = 768
  layers: int = 6
  heads: int = 12
  hidden: int = 3072
  dropout: float = 0.1
  pooling: str = "mean"

  @nn.compact
  def __call__(self, input_ids, attention_mask, *, train: bool = False):
    if self.dim % self.heads:
      raise UserError(f"DistilBertEncoder: dim {self.dim} is not a multiple of heads {self.heads}")
    if self.pooling not in ("mean", "cls"):
      raise UserError(f"unknown pooling '{self.pooling}' (mean, cls)")
    if input_ids.shape[1] > self.max_positions:
      raise UserError(f"DistilBertEncoder: {input_ids.shape[1]} tokens, more than max_positions "
                      f"{self.max_positions}")
    mask = attention_mask.astype(bool)
    x = _Embeddings(self.vocab_size, self.max_positions, self.dim, self.dropout, name="embeddings")(
        input_ids, train)
    h = _Transformer(self.layers, self.dim, self.heads, self.hidden, self.dropout, name="transformer")(
        x, mask, train)
    if self.pooling == "mean":
      w = mask[..., None].astype(h.dtype)
      pooled = (h * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
    else:
      pooled = h[:, 0]
    return l2_normalize(pooled), {"last_hidden_state": h}


class MLPEncoder(nn.Module):
  """The CPU setting's encoder of dense features: Dense -> GELU -> Dense, normalised."""
  hidden: int = 256
  dim: int = 64

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    h = nn.gelu(nn.Dense(self.hidden, name="hidden")(x))
    return l2_normalize(nn.Dense(self.dim, name="out")(h)), {}


# Flax leaf -> Hugging Face parameter name: Dense kernels and LayerNorm scales are `weight`, nn.Embed's
# table is `weight` too but keeps its (vocab, dim) layout.
_HF_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight"}
_HF_IGNORED = re.compile(r".*position_ids$")  # a buffer, saved by some transformers versions


def hf_key(path: str) -> str:
  *modules, leaf = path.split("/")
  modules = [re.sub(r"^layer_(\d+)$", r"layer.\1", m) for m in modules]
  return ".".join(modules + [_HF_LEAF[leaf]])


def distilbert_to_flax(state_dict: Mapping[str, Any], params) -> Dict[str, Any]:
  """Fills `params` (arrays or ShapeDtypeStructs of a DistilBertEncoder) from the numpy state dict of a
  `transformers.DistilBertModel`; strict, as `convert.timm_to_flax`: every tensor used, shapes equal."""
  state_dict = {k: v for k, v in state_dict.items() if not _HF_IGNORED.match(k)}
  used = set()

  def one(path, leaf):
    p = path_str(path)
    key = hf_key(p)
    if key not in state_dict:
      raise UserError(f"the DistilBERT checkpoint has no '{key}' (is it the same architecture?)")
    used.add(key)
    value = np.asarray(state_dict[key])
    if p.endswith("embedding"):  # an embedding table is not a linear layer: no transpose
      if value.shape != tuple(leaf.shape):
        raise UserError(f"'{key}' has shape {value.shape}; the Flax model needs {tuple(leaf.shape)}")
      return value.astype(leaf.dtype)
    return torch_to_flax_array(key, value, leaf.shape).astype(leaf.dtype)

  out = jax.tree_util.tree_map_with_path(one, params)
  unused = sorted(set(state_dict) - used)
  if unused:
    raise UserError(f"{len(unused)} DistilBERT tensors have no Flax counterpart, e.g. '{unused[0]}'")
  return out


_MLM_PREFIX = "distilbert."  # DistilBertForMaskedLM (distilbert-base-uncased) nests the encoder here


def load_distilbert(model_dir: str, pooling: str = "mean") -> Tuple[DistilBertEncoder, Dict[str, Any]]:
  """(DistilBertEncoder, params) from a Hugging Face DistilBERT directory as `save_pretrained` writes it and
  the hub holds it (sentence-transformers/msmarco-distilbert-base-v4, distilbert-base-uncased): the
  architecture from `config.json`, the weights from `model.safetensors`; a masked-LM checkpoint's
  prediction head (`vocab_*`) is left out. Dropout: the config's `dropout`, on attention weights too
  (DistilBERT's `attention_dropout` is the same 0.1)."""
  paths = {name: os.path.join(model_dir, name) for name in ("config.json", "model.safetensors")}
  for path in paths.values():
    if not os.path.isfile(path):
      raise UserError(f"{path} does not exist (a Hugging Face DistilBERT directory with safetensors weights)")
  with open(paths["config.json"]) as f:
    cfg = json.load(f)
  if cfg.get("model_type") != "distilbert":
    raise UserError(f"{paths['config.json']}: model_type '{cfg.get('model_type')}', not distilbert")
  if cfg.get("activation", "gelu") != "gelu":
    raise UserError(f"{paths['config.json']}: activation '{cfg['activation']}'; the encoder has GELU")
  model = DistilBertEncoder(vocab_size=cfg["vocab_size"], max_positions=cfg["max_position_embeddings"],
                            dim=cfg["dim"], layers=cfg["n_layers"], heads=cfg["n_heads"], hidden=cfg["hidden_dim"],
                            dropout=cfg["dropout"], pooling=pooling)
  state_dict = read_safetensors(paths["model.safetensors"])
  if any(k.startswith(_MLM_PREFIX) for k in state_dict):
    state_dict = {k[len(_MLM_PREFIX):]: v for k, v in state_dict.items() if k.startswith(_MLM_PREFIX)}
  ids = jnp.zeros((1, 1), jnp.int32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), ids, ids)["params"]
  return model, distilbert_to_flax(state_dict, abstract)
