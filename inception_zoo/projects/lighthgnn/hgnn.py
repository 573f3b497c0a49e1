"""HGNN, the teacher of LightHGNN (Feng et al., "LightHGNN: Distilling Hypergraph Neural Networks into
MLPs for 100x Faster Inference", ICLR 2024; HGNN: Feng et al., AAAI 2019).

Two HGNN convolutions X' = Dv^-1/2 H W_e De^-1 H^T Dv^-1/2 X Θ (Θ with a bias, applied before the
smoothing as in dhg's `HGNNConv`), ReLU and dropout between them: the official LightHGNN teacher
(`my_model.MyHGNN`, hidden 32, dropout 0.5). The student is `inception_zoo.models.mlp.graph_mlp`.
"""
import flax.linen as nn

from inception_zoo.graph.hypergraph import Hypergraph, smooth
from inception_zoo.registry import register_model


class HGNNConv(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, hg: Hypergraph):
    return smooth(nn.Dense(self.features, name="theta")(x), hg)


class HGNN(nn.Module):
  num_classes: int
  hidden: int = 32
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, hg: Hypergraph, *, train: bool = False):
    h = nn.relu(HGNNConv(self.hidden, name="conv0")(x, hg))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return HGNNConv(self.num_classes, name="conv1")(h, hg)


@register_model(tags=("graph",))
def hgnn(**kwargs) -> HGNN:
  return HGNN(**kwargs)
