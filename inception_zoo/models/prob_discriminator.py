"""MEAL V2's discriminator: a three-layer MLP on a classifier's final outputs that tells the teacher
ensemble's ("real") from the student's ("fake").

Shen & Savvides, "MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on ImageNet without
Tricks", arXiv:2009.08453, Sec. 3 ("Discriminator": a three-FC-layer subnetwork followed by a sigmoid
and binary cross-entropy). Layout of the official `models/discriminator.py` (szq0214/MEAL-V2): three
1x1 convolutions on the C-vector, i.e. dense layers C -> C/K -> C/K^2 -> 2, each followed by a ReLU
(the last one too), with K = 8 for ImageNet (1000 -> 125 -> 15 -> 2). Its two outputs are the
logits of "student" and "teacher" under `BCEWithLogitsLoss` (`discriminator_loss` in train/distill.py).

Not an image model (registered as `meal_v2_discriminator`, task 'distillation'): train/distill.py builds it
beside the student.
"""
import flax.linen as nn

from inception_zoo.errors import UserError
from inception_zoo.registry import register_model


class ProbDiscriminator(nn.Module):
  """(batch, num_classes) outputs -> (batch, 2) scores [student, teacher]."""
  num_classes: int
  reduction: int = 8  # K of the official code

  @nn.compact
  def __call__(self, x):
    hidden = (self.num_classes // self.reduction, self.num_classes // self.reduction ** 2)
    if min(hidden) < 1:
      raise UserError(f"discriminator reduction {self.reduction} leaves no hidden unit for "
                      f"{self.num_classes} classes (need num_classes >= reduction^2)")
    for i, width in enumerate(hidden):
      x = nn.relu(nn.Dense(width, name=f"fc{i + 1}")(x))
    # The official network ends in a ReLU too, so both scores are >= 0 before the sigmoid.
    return nn.relu(nn.Dense(2, name="fc3")(x))


@register_model(tags=("distillation",))
def meal_v2_discriminator(**kwargs) -> ProbDiscriminator:
  return ProbDiscriminator(**kwargs)
