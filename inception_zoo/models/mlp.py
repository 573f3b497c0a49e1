"""The two-layer perceptron of the graph papers: DAGNN's feature transform Z = MLP(X) (Liu, Gao and Ji,
KDD 2020) and LightHGNN's student (Feng et al., ICLR 2024), which sees vertex features only."""
import flax.linen as nn

from inception_zoo.registry import register_model


class MLP(nn.Module):
  """dropout(input_dropout) -> Dense(hidden) -> ReLU -> dropout -> Dense(num_classes): logits."""
  hidden: int
  num_classes: int
  dropout: float = 0.5
  input_dropout: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = nn.Dropout(self.input_dropout, deterministic=not train)(x)
    h = nn.relu(nn.Dense(self.hidden, name="fc0")(x))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(self.num_classes, name="fc1")(h)


@register_model(tags=("graph",))
def graph_mlp(**kwargs) -> MLP:
  return MLP(**kwargs)
