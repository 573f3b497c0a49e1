"""Settings shared by the Inception-v4 / Inception-ResNet experiments (paper 1).

Full setting (the paper, section 5): ImageNet-1k at 299x299, RMSProp with decay 0.9 and eps 1.0,
learning rate 0.045 decayed by 0.94 every two epochs, gradient clipping at 2.0, evaluation with a
running average of the parameters, dropout keep 0.8. The paper trained on 20 replicas without naming
the per-replica batch; 32 per replica (TF-slim's trainer) gives the global batch of 640 used here. The
number of epochs is not stated either; 100 follows Inception-v3's schedule. Label smoothing 0.1 comes
from Inception-v3 (the v4 paper is silent on it).

CPU setting (`--config=runlocal`): scikit-learn's 8x8 digits upsampled to 75x75 (the smallest input the
valid-padded stems accept), networks at 1/8 width, 400 steps of batch 64 (18 epochs).
"""
import functools

import ml_collections

from experiments.common import digits, imagenet
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.train import classification


def inception_config(model_name: str, arg: str | None) -> ml_collections.ConfigDict:
  c = classification.base_config()
  c.name = model_name
  c.model_name = model_name
  c.label_smoothing = 0.1
  c.optimizer = ml_collections.ConfigDict(dict(
      name="rmsprop", decay=0.9, eps=1.0, momentum=0.9, nesterov=False, b1=0.9, b2=0.999,
      weight_decay=4e-5, wd_mask=r".*kernel", grad_clip=2.0))
  c.schedule = ml_collections.ConfigDict(dict(
      name="exponential", base_lr=0.045, decay_rate=0.94, decay_epochs=2.0, warmup_epochs=0.0,
      end_lr_fraction=0.0))
  if arg == "runlocal":
    c.model = ml_collections.ConfigDict(dict(width=0.125, bn_momentum=0.9))
    digits(c, size=75)
    c.total_steps = 400
    # At 1/8 width the stem's gradients start ~1000x the head's: two epochs of warm-up, and clipping
    # at 10 rather than the paper's 2.0, which would freeze the head for the whole short run.
    c.schedule.update(warmup_epochs=2.0, decay_epochs=4.0)
    c.optimizer.grad_clip = 10.0
    c.ema_decay = 0.99
    c.log_every = 25
    c.eval_every = 0
    c.checkpoint_every = 100
  elif arg in (None, "", "full"):
    c.model = ml_collections.ConfigDict(dict(width=1.0, bn_momentum=0.9997))
    imagenet(c, size=299, eval_resize=342, batch_size=640, num_epochs=100.0)
    c.ema_decay = 0.9999
  else:
    raise UserError(f"unknown setting '{arg}' (runlocal, full)")
  return c


def make_experiment(model_name: str):
  """(get_config, main) of an experiment module for one of the paper's networks."""
  get_config = functools.partial(inception_config, model_name)

  def main(argv=None):
    return run_experiment(get_config, classification.run, argv)

  return get_config, main
