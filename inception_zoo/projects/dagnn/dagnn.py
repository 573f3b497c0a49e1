"""DAGNN and the coupled deep GCN it is compared with (Liu, Gao and Ji, "Towards Deeper Graph Neural
Networks", KDD 2020).

DAGNN decouples transformation from propagation (Sec. 4, Eq. 11): Z = MLP(X) maps features to class
scores once, H_l = Â^l Z for l = 0..K are propagated without parameters, a retainment score
s_l = sigmoid(H_l w + b) per node and hop (one projection w shared by all hops) weighs them, and the
output is softmax(sum_l s_l H_l). As in the official code (mengliu1998/DeeperGNN, `dagnn.py`) the MLP
has dropout on its input and hidden layer and the projection has a bias; models return logits (the
softmax is in the loss).

The coupled GCN stacks `depth` layers of dropout -> Â H W -> ReLU (Kipf & Welling), the last without
ReLU; its middle layers are one scanned layer (compile time flat in depth).
"""
import flax.linen as nn
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.graph.propagate import Adjacency, propagate, propagate_steps
from inception_zoo.models.mlp import graph_mlp
from inception_zoo.registry import register_model


class DAGNN(nn.Module):
  num_classes: int
  k: int = 10
  hidden: int = 64
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, adj: Adjacency, *, train: bool = False):
    z = graph_mlp(self.hidden, self.num_classes, self.dropout, input_dropout=self.dropout, name="mlp")(x, train=train)
    hs = propagate_steps(z, adj, self.k)  # [K + 1, N, C]
    s = nn.sigmoid(nn.Dense(1, name="retain")(hs))  # [K + 1, N, 1]
    return jnp.sum(s * hs, axis=0)


class GCNLayer(nn.Module):
  features: int
  dropout: float
  deterministic: bool
  activate: bool = True

  @nn.compact
  def __call__(self, h, adj: Adjacency):
    h = nn.Dropout(self.dropout, deterministic=self.deterministic)(h)
    h = propagate(nn.Dense(self.features)(h), adj)
    return nn.relu(h) if self.activate else h


class _ScannedGCNLayer(GCNLayer):
  def __call__(self, h, adj: Adjacency):
    return super().__call__(h, adj), None


class DeepGCN(nn.Module):
  """A plain GCN of `depth` graph convolutions (the coupled baseline whose accuracy falls with depth)."""
  num_classes: int
  depth: int = 2
  hidden: int = 64
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, adj: Adjacency, *, train: bool = False):
    if self.depth < 1:
      raise UserError(f"a GCN needs depth >= 1, got {self.depth}")
    det = not train
    if self.depth > 1:
      x = GCNLayer(self.hidden, self.dropout, det, name="first")(x, adj)
    if self.depth > 2:
      middle = nn.scan(_ScannedGCNLayer, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                       in_axes=nn.broadcast, length=self.depth - 2)
      x, _ = middle(self.hidden, self.dropout, det, name="middle")(x, adj)
    return GCNLayer(self.num_classes, self.dropout, det, activate=False, name="last")(x, adj)


@register_model(tags=("graph",))
def dagnn(**kwargs) -> DAGNN:
  return DAGNN(**kwargs)


@register_model(tags=("graph",))
def deep_gcn(**kwargs) -> DeepGCN:
  return DeepGCN(**kwargs)
