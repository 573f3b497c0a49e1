"""Optimizers and learning-rate schedules from the config.

`config.optimizer`:
  name: 'rmsprop' (the paper: decay 0.9, eps 1.0), 'sgd' (momentum, nesterov), 'adamw' (b1, b2;
  decoupled decay) or 'adam' (decay added to the gradient as L2, as torch's Adam and geoopt's
  RiemannianAdam do with `weight_decay`);
  weight_decay and wd_mask (which parameters decay: a regex on parameter paths, by default conv/dense
  kernels only, or 'no_norm_bias', timm's rule for modern backbones; see `decay_mask`),
  grad_clip (global-norm clipping; the paper clips at 2.0; 0 = off),
  freeze (a regex on parameter paths that are never updated, e.g. a detector's frozen stem and stage 1,
  as torchvision's `trainable_layers=3`; '' = none).
`config.schedule`:
  name: 'exponential' (base_lr * decay_rate ** floor(epoch / decay_epochs): the paper's 0.045 x 0.94
  every two epochs), 'cosine', 'constant', 'multistep' (x decay_rate at each of `milestones`, in
  epochs) or 'poly' (base_lr * (1 - t / T) ** power down to end_lr_fraction x base_lr, T the steps after
  warm-up); warmup_epochs of linear warm-up for any of them, from `warmup_from` x base_lr (default 0).
Methods that change the update itself (sparse training's masks) wrap this optimizer through their
`Task` (`Task.wrap_optimizer`, e.g. inception_zoo/sparsity/training.py), never from here.
"""
import re

import jax
import ml_collections
import optax

from inception_zoo.errors import UserError
from inception_zoo.pytree import path_str


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  s = config.schedule
  warmup = int(round(s.get("warmup_epochs", 0.0) * steps_per_epoch))
  if s.name == "exponential":
    main = optax.exponential_decay(s.base_lr, transition_steps=max(1, round(s.decay_epochs * steps_per_epoch)),
                                   decay_rate=s.decay_rate, staircase=True)
  elif s.name == "cosine":
    main = optax.cosine_decay_schedule(s.base_lr, decay_steps=max(1, total_steps - warmup),
                                       alpha=s.get("end_lr_fraction", 0.0))
  elif s.name == "constant":
    main = optax.constant_schedule(s.base_lr)
  elif s.name == "multistep":  # x decay_rate at each of `milestones` (epochs from the start of training)
    main = optax.piecewise_constant_schedule(
        s.base_lr, {int(round(m * steps_per_epoch)) - warmup: s.decay_rate for m in s.milestones})
  elif s.name == "poly":  # segmentation's (mmseg, DeepLab): (1 - t / T) ** power over the steps after warm-up
    main = optax.polynomial_schedule(s.base_lr, s.base_lr * s.get("end_lr_fraction", 0.0), s.get("power", 0.9),
                                     max(1, total_steps - warmup))
  else:
    raise UserError(f"unknown schedule '{s.name}' (exponential, cosine, constant, multistep, poly)")
  if not warmup:
    return main
  # warmup_from: the first step's fraction of base_lr (0: from zero; 0.001 in torchvision's detection recipes)
  start = s.base_lr * s.get("warmup_from", 0.0)
  return optax.join_schedules([optax.linear_schedule(start, s.base_lr, warmup), main], [warmup])


# Tensors of two or more dimensions that still do not decay under 'no_norm_bias': position embeddings
# and class/distillation tokens (ViT, DeiT), Swin's relative-position bias tables, Swin V2's
# continuous position-bias MLP and per-head logit scale (the names timm's `no_weight_decay()` lists).
NO_DECAY_NAMES = r"pos_embed|cls_token|dist_token|relative_position_bias_table|cpb_mlp|logit_scale"


def decay_mask(spec: str):
  """params -> tree of bools, True where the parameter decays.

  `spec` 'no_norm_bias' is timm's `param_groups_weight_decay` rule, which DeiT, ConvNeXt, Swin and
  InceptionNeXt train with: every tensor of two or more dimensions (conv and dense kernels) decays;
  vectors (norm scales and biases, all biases, layer-scale gammas) and the NO_DECAY_NAMES tables do not.
  Any other `spec` is a regex matched against the whole parameter path ('stages/layers_0/.../kernel').
  """
  if spec == "no_norm_bias":
    skip = re.compile(NO_DECAY_NAMES)
    return lambda params: jax.tree_util.tree_map_with_path(
        lambda p, x: len(x.shape) >= 2 and not skip.search(path_str(p)), params)
  try:
    regex = re.compile(spec)
  except re.error as e:
    raise UserError(f"optimizer.wd_mask '{spec}' is neither 'no_norm_bias' nor a valid regex ({e})")
  return lambda params: jax.tree_util.tree_map_with_path(
      lambda p, _: bool(regex.fullmatch(path_str(p))), params)


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  o = config.optimizer
  wd = o.get("weight_decay", 0.0)
  mask = decay_mask(o.get("wd_mask", r".*kernel"))
  if o.name == "rmsprop":
    # TensorFlow's RMSProp, as the paper used: eps inside the square root, mean square starting at 1.
    core = optax.rmsprop(schedule, decay=o.decay, eps=o.eps, initial_scale=1.0,
                         momentum=o.get("momentum", 0.0) or None)
  elif o.name == "sgd":
    core = optax.sgd(schedule, momentum=o.get("momentum", 0.9), nesterov=o.get("nesterov", False))
  elif o.name == "adamw":  # decoupled decay, applied by adamw itself
    core = optax.adamw(schedule, b1=o.get("b1", 0.9), b2=o.get("b2", 0.999), eps=o.get("eps", 1e-8),
                       weight_decay=wd, mask=mask)
  elif o.name == "adam":
    core = optax.adam(schedule, b1=o.get("b1", 0.9), b2=o.get("b2", 0.999), eps=o.get("eps", 1e-8))
  else:
    raise UserError(f"unknown optimizer '{o.name}' (rmsprop, sgd, adamw, adam)")
  parts = []
  if o.get("grad_clip", 0.0):
    parts.append(optax.clip_by_global_norm(o.grad_clip))
  if wd and o.name != "adamw":  # L2 regularisation, as TF-slim's weight decay
    parts.append(optax.add_decayed_weights(wd, mask))
  tx = optax.chain(*parts, core)
  if not o.get("freeze", ""):
    return tx
  frozen = decay_mask(o.freeze)  # the same regex-on-paths rule, here for what never moves
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               lambda params: jax.tree.map(lambda f: "frozen" if f else "train", frozen(params)))
