"""Joint (sandwich-rule) training of an elastic supernet on the classification trainer's loop: SimQ-NAS's
ImageNet supernet stage (Sridhar et al., "SimQ-NAS", arXiv:2312.13301, 2023, on OFA / BootstrapNAS
supernets).

Every step trains the largest subnet on the labels and the smallest plus `supernet.num_random` random
subnets on the largest one's soft predictions (`supernet.sandwich_objective`), gradients summed; the
BN running statistics follow the largest subnet (every other subnet is recalibrated before it is scored).
Evaluation scores the largest subnet. Input, sharding, resume, checkpoints and metrics are the
classification trainer's (`train.classification.Task`), so `init_from` a converted timm `resnet50` starts
the supernet from ResNet-50's weights, as BootstrapNAS does.
"""
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.projects.simq_nas import supernet
from inception_zoo.train import classification
from inception_zoo.train.state import TrainState, step_rng


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> supernet.ElasticResNet:
  options = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.supernet.items()}
  if options.pop("kind") != "elastic_resnet":
    raise UserError(f"the supernet trainer builds 'elastic_resnet' supernets; got '{config.supernet.kind}'")
  return supernet.ElasticResNet(num_classes=num_classes, bn_momentum=config.bn_momentum, **options)


def make_train_step(model: supernet.ElasticResNet, tx, schedule, config: ml_collections.ConfigDict):

  def train_step(state: TrainState, batch):
    archs = supernet.sandwich_archs(model, step_rng(state), config.num_random)

    def loss_fn(params):
      def logits(arch):
        return model.apply({"params": params, "batch_stats": state.batch_stats}, batch["image"], arch,
                           train=True, mutable=["batch_stats"])
      largest, updates = logits(archs[0])
      loss, ce = supernet.sandwich_objective(largest, [logits(a)[0] for a in archs[1:]], batch["label"])
      return loss, (largest, ce, updates["batch_stats"])

    (loss, (largest, ce, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new, grad_norm = classification.update_state(state, grads, loss, batch_stats, tx, config)
    return new, {"loss": loss, "largest_ce": ce, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
                 "accuracy": jnp.mean(jnp.argmax(largest, -1) == batch["label"])}

  return train_step


def make_eval_step(model: supernet.ElasticResNet, config: ml_collections.ConfigDict):

  def eval_step(state: TrainState, batch):
    logits = model.apply({"params": classification.eval_params(state, config), "batch_stats": state.batch_stats},
                         batch["image"])
    mask = batch["mask"]
    return {"top1": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask), "count": jnp.sum(mask)}

  return eval_step


def summary(config, result: Dict[str, float], num_images: int, step: int) -> str:
  return f"supernet: largest subnet held-out top-1 {result['eval/top1']:.4f} ({num_images} images, step {step})"


SUPERNET = classification.Task(build_model, make_train_step, make_eval_step, summary)


def base_config() -> ml_collections.ConfigDict:
  """The classification trainer's fields plus the sandwich rule's; experiments set what differs."""
  c = classification.base_config()
  c.num_random = 2  # random subnets per step besides the largest and the smallest
  c.bn_momentum = 0.9
  return c
