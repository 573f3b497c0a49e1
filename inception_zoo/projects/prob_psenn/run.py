"""prob_psenn's experiment driver (README.md; the recipes are experiments/prob_psenn.py)."""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.prob_psenn import psenn
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


def ood_sets(images: np.ndarray, names, rng: np.random.Generator, patch_scale: int) -> Dict[str, np.ndarray]:
  """Out-of-distribution images (N, H, W) in [0, 1], as many as `images`, built from them or from
  scikit-learn's two sample photographs (random crops of patch_scale * H pixels, grey, block-averaged)."""
  n, h, w = images.shape
  out = {}
  for name in names:
    if name == "inverted":
      out[name] = 1.0 - images
    elif name == "rotated":
      out[name] = np.rot90(images, 1, axes=(1, 2))
    elif name == "noise":
      out[name] = rng.uniform(size=images.shape).astype(np.float32)
    elif name == "patches":
      from sklearn.datasets import load_sample_images
      photos = [p.mean(-1) / 255.0 for p in load_sample_images().images]
      ch, cw = patch_scale * h, patch_scale * w
      crops = []
      for i in range(n):
        photo = photos[i % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - ch), rng.integers(0, photo.shape[1] - cw)
        crops.append(photo[top:top + ch, left:left + cw].reshape(h, patch_scale, w, patch_scale).mean((1, 3)))
      out[name] = np.stack(crops).astype(np.float32)
    else:
      raise UserError(f"unknown OOD set '{name}' (inverted, rotated, noise, patches)")
  return out


def _model(config, probabilistic: bool, input_dim: int) -> psenn.PSENN:
  return psenn.PSENN(num_classes=10, prototypes_per_class=config.prototypes_per_class, input_dim=input_dim,
                     hidden=tuple(config.hidden), latent_dim=config.latent_dim, probabilistic=probabilistic,
                     sigma_init=config.sigma_init)


def _loss(model: psenn.PSENN, config, x, y):
  w = config.loss_weights
  num_samples = config.train_samples if model.probabilistic else 1

  def loss_fn(params, key):
    logits, aux = model.apply({"params": params}, x, key, num_samples)
    terms = psenn.psenn_losses(logits, aux, x, y)
    total = w.ce * terms["ce"] + w.recon * terms["recon"] + w.r1 * terms["r1"] + w.r2 * terms["r2"]
    if model.probabilistic:
      sigma = model.apply({"params": params}, method=lambda m: m.sigma())
      # The prototypes are global parameters: their KL counts once per pass over the training set.
      terms["kl"] = psenn.gaussian_kl(params["mu"], sigma, config.prior_std) / x.shape[0]
      terms["sigma"] = sigma.mean()
      total = total + config.kl_weight * terms["kl"]
    terms["accuracy"] = jnp.mean(jnp.argmax(jax.nn.softmax(logits).mean(0), -1) == y)
    return total, terms
  return loss_fn


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  from sklearn.metrics import roc_auc_score
  train_images, y_train = datasets.grey_images(config.data, "train")
  test_images, y_test = datasets.grey_images(config.data, "test")
  x_train, x_test = (a.reshape(len(a), -1) for a in (train_images, test_images))
  rng = np.random.default_rng(config.seed)
  ood = {k: v.reshape(len(v), -1) for k, v in ood_sets(test_images, config.ood_sets, rng,
                                                        config.patch_scale).items()}
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  key = jax.random.key(config.seed)
  result: Dict[str, float] = {}
  trained = {}
  for name, probabilistic in (("point", False), ("prob", True)):
    model = _model(config, probabilistic, x_train.shape[1])
    params = jax.jit(model.init)(key, x_train[:1], key)["params"]
    params, _ = fit(_loss(model, config, x_train, y_train), params, optax.adam(config.learning_rate),
                    config.total_steps, key=jax.random.fold_in(key, 1), has_aux=True,
                    log_every=config.log_every, writer=writer, prefix=f"{name}/train/")
    trained[name] = (model, params)
    num_samples = config.test_samples if probabilistic else 1
    evaluate = jax.jit(lambda p, x, m=model, s=num_samples: _evaluate(m, p, x, jax.random.fold_in(key, 2), s))
    scores = {split: evaluate(params, x) for split, x in (("test", x_test), *ood.items())}
    result[f"{name}/accuracy"] = float(np.mean(np.argmax(scores["test"]["probs"], -1) == y_test))
    measures = ("predictive_entropy", "mutual_information") if probabilistic else ("predictive_entropy",)
    for split in ood:
      labels = np.r_[np.zeros(len(x_test)), np.ones(len(ood[split]))]
      for measure in measures:
        values = np.r_[scores["test"][measure], scores[split][measure]]
        result[f"{name}/auroc/{measure}/{split}"] = float(roc_auc_score(labels, values))
    if probabilistic:
      for split, s in scores.items():
        result[f"prob/mean_mi/{split}"] = float(np.mean(s["mutual_information"]))
        result[f"prob/explanation_variability/{split}"] = float(np.mean(s["explanation_variability"]))
      result["prob/sigma_mean"] = float(jnp.mean(model.apply({"params": params}, method=lambda m: m.sigma())))
      mi = {split: np.asarray(s["mutual_information"]) for split, s in scores.items()}
  result["prob/auroc/mutual_information/mean"] = float(np.mean(
      [result[f"prob/auroc/mutual_information/{s}"] for s in ood]))
  writer.write(config.total_steps, result)
  writer.close()
  plot_prototypes(trained, config, os.path.join(workdir, "prob_psenn_prototypes.png"), train_images.shape[1:])
  plot_ood(mi, result, os.path.join(workdir, "prob_psenn_ood.png"))
  return result


def _evaluate(model, params, x, key, num_samples):
  logits, aux = model.apply({"params": params}, x, key, num_samples)
  probs = jax.nn.softmax(logits)
  return dict(probs=probs.mean(0), **psenn.uncertainty(probs),
              explanation_variability=psenn.explanation_variability(aux["distances"]))


def decoded_prototypes(model: psenn.PSENN, params, key: jax.Array, draws: int) -> jax.Array:
  """Images (1 + draws, K, input_dim): the decoded prototype means, then `draws` decoded samples
  (the point model has only its means)."""
  def decode_all(m):
    z = m.mu[None] if not m.probabilistic else jnp.concatenate([m.mu[None], m.draw(key, draws)])
    return m.decode(z)
  return jax.jit(lambda p: model.apply({"params": p}, method=decode_all))(params)


def plot_prototypes(trained, config, path: str, shape, draws: int = 4):
  """Rows: the point model's prototypes, Prob-PSENN's means, then `draws` rows of sampled prototypes."""
  plt = plots.pyplot()
  point = decoded_prototypes(*trained["point"], jax.random.key(config.seed), draws)
  prob = decoded_prototypes(*trained["prob"], jax.random.key(config.seed), draws)
  rows = [("point", point[0]), ("prob mean", prob[0])] + [(f"draw {i}", prob[1 + i]) for i in range(draws)]
  h, w = shape
  # One mosaic (a pixel of padding between prototypes) instead of a grid of axes: 10x faster to draw.
  mosaic = np.ones((len(rows) * (h + 1), point.shape[1] * (w + 1)))
  for r, (_, images) in enumerate(rows):
    for j, image in enumerate(np.asarray(images)):
      mosaic[r * (h + 1):r * (h + 1) + h, j * (w + 1):j * (w + 1) + w] = 1.0 - image.reshape(h, w)
  fig, ax = plt.subplots(figsize=(point.shape[1] * 0.7, len(rows) * 0.75))
  ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.set_yticks([r * (h + 1) + h / 2 for r in range(len(rows))], [label for label, _ in rows], fontsize=7)
  ax.set_xticks([j * (w + 1) + w / 2 for j in range(point.shape[1])], [str(c) for c in range(point.shape[1])],
                fontsize=7)
  ax.set_xlabel("prototype (class)", fontsize=7)
  plots.save(fig, path)


def plot_ood(mi: Dict[str, np.ndarray], result: Dict[str, float], path: str):
  plt = plots.pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  bins = np.linspace(0, max(float(v.max()) for v in mi.values()) + 1e-6, 40)
  for split, values in mi.items():
    label = split if split == "test" else f"{split} (AUROC {result[f'prob/auroc/mutual_information/{split}']:.2f})"
    ax.hist(values, bins=bins, histtype="step", density=True, label=label)
  ax.set_xlabel("mutual information (nats), 64 prototype draws")
  ax.set_ylabel("density")
  ax.set_yscale("log")
  ax.legend(fontsize=7)
  plots.save(fig, path)
