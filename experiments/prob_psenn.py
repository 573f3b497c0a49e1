"""Prob-PSENN (Vadillo, Santana, Lozano, Kwiatkowska, "Uncertainty-Aware Explanations Through
Probabilistic Self-Explainable Neural Networks", arXiv 2403.13740, 2024), paper 27 of the zoo, on digits.

Claims reproduced (Sec. 4-5): replacing the point prototypes of a PSENN (Li et al., AAAI 2018) by
Gaussian distributions keeps the accuracy of the point model, and the uncertainty the prototype
distributions carry (mutual information between the prediction and the prototypes, estimated by
Monte-Carlo draws) is higher on out-of-distribution inputs, so it detects them: AUROC of MI, in-
distribution test digits vs inverted digits, digits rotated by 90 degrees, uniform noise and patches of
natural images (scikit-learn's sample images, block-averaged to 8x8). The decoded prototypes (mean and
draws) are saved as images in WORKDIR/prob_psenn_prototypes.png, the MI distributions per set in
WORKDIR/prob_psenn_ood.png.
  python -m experiments.prob_psenn --config=runlocal --workdir=workdirs/prob_psenn
CPU time here: 24 s of CPU (2-3 min wall on 2 cores shared with other jobs).
Measured (360 held-out digits, 64 prototype draws at test): accuracy point PSENN 0.983, Prob-PSENN 0.981;
AUROC of Prob-PSENN's MI, test digits vs inverted 0.96, rotated 0.81, uniform noise 0.85, image patches
0.90 (mean 0.88); mean MI 0.011 nats on test digits, 0.07-0.16 on the OOD sets; the nearest prototype
changes between draws for 1.0% of test digits, 5-10% of OOD inputs; mean sigma 0.21 (prior 1.0).
The point model's predictive entropy (its only uncertainty; its MI is 0) gives AUROC 0.65 / 0.71 / 0.83
/ 0.96 on the same sets: the MI is not uniformly the better detector. Rotated digits are the unstable
set: with --config.seed=1 their MI AUROC is 0.17 (many read as other digits), the three others
0.97-0.98.

CPU setting (`runlocal`): scikit-learn's 8x8 digits (1,437 train / 360 test, pixels in [0, 1],
flattened); an MLP autoencoder 64-128-16-128-64 (linear latent, sigmoid output), one prototype per
class; Li et al.'s loss weights (cross-entropy 20, reconstruction 1, R1 1, R2 1); Prob-PSENN adds the
KL to a N(0, prior_std^2) prior and averages over 8 prototype draws per step; both models train full
batch with Adam (lr 5e-3, 1,000 steps) through `inception_zoo.train.fullbatch.fit`, same seed and steps. Our
choices for digits: the latent width, the MLP (Li et al. use a 4-layer conv autoencoder with a 40-d
latent on MNIST) and the KL weight.

Full setting (`get_config()`): MNIST, Fashion-MNIST and K-MNIST through tfds (prepared beforehand with
`tfds build mnist` etc.; `--config.data=tfds:fashion_mnist`), 28x28 flattened to 784, a wider MLP
autoencoder (784-512-256-40), 60,000 training images full batch (fits one accelerator), the same OOD
sets built at 28x28.
"""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter
from inception_zoo.proto import psenn
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="prob_psenn_digits", data="digits", seed=0, hidden=(128,), latent_dim=16, prototypes_per_class=1,
      sigma_init=0.5, prior_std=1.0, kl_weight=1.0, train_samples=8, test_samples=64,
      loss_weights=dict(ce=20.0, recon=1.0, r1=1.0, r2=1.0), learning_rate=5e-3, total_steps=1000,
      log_every=500, patch_scale=4, ood_sets=("inverted", "rotated", "noise", "patches")))
  if arg == "runlocal":
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = MNIST; --config.data=tfds:fashion_mnist "
                    f"or tfds:kmnist for the others)")
  c.update(name="prob_psenn_mnist", data="tfds:mnist", hidden=(512, 256), latent_dim=40, total_steps=5000,
           learning_rate=1e-3)
  return c


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
  train_images, y_train = common.grey_images(config.data, "train")
  test_images, y_test = common.grey_images(config.data, "test")
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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
