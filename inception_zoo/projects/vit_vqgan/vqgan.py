"""The two training stages of Vector-quantized Image Modeling as steps of the shared loop (train/loop.py).

Yu et al., "Vector-quantized Image Modeling with Improved VQGAN", ICLR 2022 (arXiv:2110.04627).
Stage 1 (Sec. 3): a ViT-VQGAN and, when the adversarial term is on, StyleGAN's discriminator with R1
(Mescheder et al. 2018) play one round per step: the generator minimises Sec. 3.3's combined loss
(`models.vit_vqgan.vqgan_loss`), then the discriminator its logistic loss on the real batch and the
new reconstructions plus gamma / 2 R1. Stage 2 (Sec. 4): VIM minimises the next-token cross-entropy of
the frozen stage-1 encoder's tokens of each batch, its start token the class or, with probability
`class_dropout`, "no class".

A state is one pytree of arrays (parameters, optimizer states, the step, stage 2's key), so
`loop.restore_or_start` resumes it; the only per-step randomness (stage 2's class dropout) comes from
fold_in(key, step), so a resumed run equals an uninterrupted one when its batches are functions of the
step. `over_seeds` trains several stage-1 models (one per seed, stacked on a leading axis) in one step.
"""
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import optax

from inception_zoo.projects.vit_vqgan import vim, vit_vqgan
from inception_zoo.train.state import apply_gradients


def next_step(state: dict) -> dict:
  return {**state, "step": state["step"] + 1}


def stage1_init(model: vit_vqgan.ViTVQGAN, tx: optax.GradientTransformation, seed, *,
                disc: Optional[vit_vqgan.Discriminator] = None, disc_tx: Optional[optax.GradientTransformation] = None):
  """The stage-1 state of one seed (a traced int is fine, for `jax.vmap` over seeds)."""
  key = jax.random.key(seed)
  x = jnp.zeros((1, model.image_size, model.image_size, model.channels))
  params = model.init(key, x)["params"]
  state = {"step": jnp.zeros([], jnp.int32), "params": params, "opt": tx.init(params)}
  if disc is not None:
    d_params = disc.init(jax.random.fold_in(key, 1), x)["params"]
    state.update(disc=d_params, disc_opt=disc_tx.init(d_params))
  return state


def stage1_step(model: vit_vqgan.ViTVQGAN, tx: optax.GradientTransformation, weights: Dict[str, float], *,
                disc: Optional[vit_vqgan.Discriminator] = None, disc_tx: Optional[optax.GradientTransformation] = None,
                r1_gamma: float = 0.0, perceptual_fn: Optional[Callable] = None) -> Callable:
  """step(state, images in [0, 1]) -> (state, metrics) for one model: the generator's update on the
  weighted loss (terms of weight 0 are not computed), then, with an adversarial weight, the
  discriminator's update against the reconstructions of the same batch."""
  weights = {k: v for k, v in weights.items() if v}
  adversarial = bool(weights.get("adversarial"))

  def step(state, images):
    def loss_fn(p):
      recon, aux = model.apply({"params": p}, images)
      fake = disc.apply({"params": state["disc"]}, recon) if adversarial else None
      loss, terms = vit_vqgan.vqgan_loss(images, recon, aux, weights=weights, perceptual_fn=perceptual_fn,
                                         fake_logits=fake)
      return loss, ({"perplexity": aux["perplexity"], **terms}, recon)

    (loss, (metrics, recon)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    new, grad_norm = apply_gradients(state, grads, loss, tx, opt_state="opt", finish=next_step)
    metrics = {"loss": loss, "grad_norm": grad_norm, **metrics}
    if adversarial:
      fake = jax.lax.stop_gradient(recon)

      def disc_loss(dp):
        d = lambda x: disc.apply({"params": dp}, x)
        gan = vit_vqgan.discriminator_loss(d(images), d(fake))
        r1 = vit_vqgan.r1_penalty(d, images)
        return gan + 0.5 * r1_gamma * r1, (gan, r1)

      (d_loss, (gan, r1)), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(state["disc"])
      new, _ = apply_gradients(new, d_grads, d_loss, disc_tx, params="disc", opt_state="disc_opt")
      metrics.update(disc_loss=gan, r1=r1)
    return new, metrics

  return step


def over_seeds(step: Callable) -> Callable:
  """One compiled step for stacked states (S, ...) and batches (S, B, ...), each seed on its own batch
  (vmapped, so no gradient crosses seeds); metrics are the means over seeds."""
  def stacked(state, batch, *extra):
    new, metrics = jax.vmap(step, in_axes=(0, 0) + (None,) * len(extra))(state, batch, *extra)
    return new, jax.tree.map(jnp.mean, metrics)
  return jax.jit(stacked, donate_argnums=0)


def stage2_init(model: vim.VIM, tx: optax.GradientTransformation, seed: int):
  tokens, labels = jnp.zeros((1, model.seq_len), jnp.int32), jnp.zeros((1,), jnp.int32)
  params = model.init(jax.random.key(seed), tokens, labels)["params"]
  return {"step": jnp.zeros([], jnp.int32), "params": params, "opt": tx.init(params),
          "key": jax.random.key_data(jax.random.key(seed + 1))}


def stage2_step(model: vim.VIM, tx: optax.GradientTransformation, tokenizer: vit_vqgan.ViTVQGAN, *,
                class_dropout: float) -> Callable:
  """step(state, {"image": (B, H, W, C) in [0, 1], "label": (B,)}, tokenizer_params) -> (state, metrics):
  the frozen tokenizer's raster tokens of the batch are the targets (no gradient reaches it)."""
  def step(state, batch, tokenizer_params):
    images, labels = batch["image"], batch["label"]
    tokens = tokenizer.apply({"params": tokenizer_params}, images, method=tokenizer.encode)
    tokens = jax.lax.stop_gradient(tokens.reshape(images.shape[0], -1))
    key = jax.random.fold_in(jax.random.wrap_key_data(state["key"]), state["step"])
    drop = jax.random.bernoulli(key, class_dropout, labels.shape)
    labels = jnp.where(drop, model.num_classes, labels)
    loss, grads = jax.value_and_grad(
        lambda p: vim.next_token_loss(model.apply({"params": p}, tokens, labels)[0], tokens))(state["params"])
    new, grad_norm = apply_gradients(state, grads, loss, tx, opt_state="opt", finish=next_step)
    return new, {"loss": loss, "grad_norm": grad_norm}

  return jax.jit(step, donate_argnums=0)
