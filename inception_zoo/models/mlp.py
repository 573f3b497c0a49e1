"""The zoo's multi-layer perceptron: the graph papers' two-layer MLP (DAGNN's feature transform Z = MLP(X),
Liu, Gao and Ji, KDD 2020; LightHGNN's student, Feng et al., ICLR 2024), random pruning's digits MLPs and
MIP's primary network."""
from typing import Sequence

import flax.linen as nn

from inception_zoo.registry import register_model


class MLP(nn.Module):
  """[flatten] -> dropout(input_dropout) -> per width of `hidden`: Dense -> ReLU -> dropout -> Dense(num_classes).

  Returns the logits, or with `with_features` the classifiers' `(logits, {"pre_logits": h})` (what the
  classification trainer takes). Layers are named `hidden_name.format(i)` and `head_name`: a parameter's
  name seeds its initialisation, so each model this one replaced keeps its names and its numbers."""
  num_classes: int
  hidden: Sequence[int] = (128,)
  dropout: float = 0.0
  input_dropout: float = 0.0
  flatten: bool = False
  with_features: bool = False
  hidden_name: str = "fc{}"
  head_name: str = "head"

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.flatten:
      x = x.reshape(x.shape[0], -1)
    x = nn.Dropout(self.input_dropout, deterministic=not train)(x)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=self.hidden_name.format(i))(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, name=self.head_name)(x)
    return (logits, {"pre_logits": x}) if self.with_features else logits


@register_model(tags=("graph",))
def graph_mlp(hidden: int, num_classes: int, dropout: float = 0.5, input_dropout: float = 0.0, **kwargs) -> MLP:
  """The graph papers' two-layer MLP (layers fc0, fc1); `kwargs`: other fields, or the module's name."""
  return MLP(num_classes, (hidden,), dropout, input_dropout, head_name="fc1", **kwargs)
