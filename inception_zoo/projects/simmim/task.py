"""SimMIM pre-training (Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022)
on the classification trainer's loop.

    python -m experiments.simmim_swinv2 --config=runlocal --workdir=workdirs/simmim_swinv2_digits

Only the task differs from classification (`classification.Task`): the model is `models.simmim.SimMIM`
around the Swin V2 `config.model_name`, the train step masks each image at random and minimises the
masked-pixel L1 (Sec. 3), and the evaluation reports that L1 on the held-out images under fixed masks.
Resume, sharding, the NaN stop, metrics, checkpoints and pre-emption are the shared loop's.

Masks are drawn on the device from the step's key (`state.step_rng`) rather than in the input pipeline:
the step key is a function of the checkpointed state, so a resumed run draws the same masks, the
pipeline stays the classification one, and no mask crosses from host to device. The evaluation splits
a fixed key over the rows of each batch: the same masks at every evaluation, so held-out losses of
different steps compare.

A pre-trained workdir initialises a classifier with `config.init_from=<workdir>`: the encoder's
weights load, the mask token and decoder are left out, the classifier starts fresh (`ckpt.merge_weights`).
"""
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections

from inception_zoo.projects.simmim.simmim import SimMIM, masked_l1, random_masks, simmim
from inception_zoo.train import classification
from inception_zoo.train.state import TrainState, step_rng

EVAL_MASK_SEED = 0


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> SimMIM:
  del num_classes  # self-supervised: labels are not used
  return simmim(config.model_name, **config.model.to_dict())


def batch_masks(model: SimMIM, config: ml_collections.ConfigDict, key: jax.Array, images) -> jax.Array:
  m = config.simmim
  return random_masks(key, images.shape[0], model.encoder.img_size, m.mask_patch_size,
                      model.encoder.patch_size, m.mask_ratio)


def make_train_step(model: SimMIM, tx, schedule, config: ml_collections.ConfigDict):
  patch = model.encoder.patch_size

  def train_step(state: TrainState, batch):
    rng = step_rng(state)
    images = batch["image"]
    # Masks from their own fold of the step key: dropout (drop path) sees the same key either way.
    mask = batch_masks(model, config, jax.random.fold_in(rng, 1), images)

    def loss_fn(params):
      (reconstruction, _), updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, images, mask, train=True,
          mutable=["batch_stats"], rngs={"dropout": rng})
      return masked_l1(images, reconstruction, mask, patch), updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new, grad_norm = classification.update_state(state, grads, loss, batch_stats, tx, config)
    return new, {"loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step)}

  return train_step


def make_eval_step(model: SimMIM, config: ml_collections.ConfigDict):
  patch = model.encoder.patch_size

  def eval_step(state: TrainState, batch):
    images, rows = batch["image"], batch["mask"]  # rows: 0 for the padding of the last batch
    mask = batch_masks(model, config, jax.random.key(EVAL_MASK_SEED), images)
    reconstruction, _ = model.apply(
        {"params": classification.eval_params(state, config), "batch_stats": state.batch_stats},
        images, mask, train=False)
    # Sums over masked pixels and channels of real rows; evaluate() divides by their count, which
    # is the official normalisation over the whole held-out set.
    pixels = jnp.repeat(jnp.repeat(mask, patch, axis=1), patch, axis=2)[..., None] * rows[:, None, None, None]
    error = jnp.abs(images.astype(jnp.float32) - reconstruction.astype(jnp.float32))
    return {"masked_l1": jnp.sum(error * pixels), "count": jnp.sum(pixels) * images.shape[-1]}

  return eval_step


def summary(config, result: Dict[str, float], num_images: int, step: int) -> str:
  return (f"simmim {config.model_name}: held-out masked L1 {result['eval/masked_l1']:.4f} "
          f"({num_images} images, step {step})")


SIMMIM = classification.Task(build_model, make_train_step, make_eval_step, summary)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  return classification.train_and_evaluate(config, workdir, SIMMIM)


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  return classification.run(config, workdir, SIMMIM)


def base_config() -> ml_collections.ConfigDict:
  """The classification trainer's fields plus the masking; experiments set what differs."""
  c = classification.base_config()
  # Sec. 4.1: 32 px mask patches, ratio 0.6 (official MaskGenerator defaults at 192 px).
  c.simmim = ml_collections.ConfigDict(dict(mask_patch_size=32, mask_ratio=0.6))
  return c
