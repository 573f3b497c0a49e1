"""Neural collapse in deep linear networks (Dang, Tran, Osher, Tran-The, Ho & Nguyen, "Neural Collapse in
Deep Linear Networks: From Balanced to Imbalanced Data", ICML 2023), paper 14 of the zoo.

Claims reproduced (Sec. 3-4 and their synthetic / practical experiments): at the global minimum of the
deep linear unconstrained-features model (free features + M linear layers, weight decay on all),
  (1) balanced data: every linear layer's features collapse to their class means (NC1 -> 0), the centred
      class means form a simplex ETF (NC2 -> 0) and the classifier aligns with them (NC3 -> 0), for MSE
      with an unregularised last-layer bias; with cross-entropy (bias-free, M = 3) our runs collapse (NC1 ->
      0, NC3 -> 0) but to a rank-2 configuration of antipodal pairs, not the ETF (NC2 = 0.61): the low-rank
      bias of deep weight decay (Sukenik et al., 2024); reported, not asserted. Over seeds 0-5 the same
      objective reaches the ETF from 4 initialisations (loss 0.04493) and the rank-2 point from 2, whose
      loss is lower (0.04136): at this depth and weight decay the ETF is not the global minimum;
  (2) imbalanced data, bias-free MSE: collapse again, but the class means are orthogonal with lengths set
      by n_k (the closed form in `inception_zoo.theory.neural_collapse`): classifier rows longer for larger
      classes, feature means longer for smaller ones;
  (3) a real network (an MLP backbone on digits + a deep linear head): NC1 of every head layer falls over
      training.
  python -m experiments.neural_collapse --config=runlocal --workdir=workdirs/neural_collapse
Figures: WORKDIR/nc_ufm_layers.png (NC1 / NC2 per layer, three UFM runs) and WORKDIR/nc_digits.png (NC1 of
each layer over training). CPU time measured here: about 20 s on 2 shared cores.
Measured here (runlocal): balanced MSE + bias NC1 < 1e-10, NC2 <= 4e-5, NC3 3e-4 at every layer;
imbalanced bias-free MSE: orthogonal class means (NC2 to the closed-form frame <= 3e-4), classifier and
class-mean norms within 0.05% of the closed form (classifier 2.17 / 1.93 / 1.77 / 1.61, last-layer means
0.457 / 0.509 / 0.551 / 0.592 for n = 500 / 200 / 100 / 50); digits: NC1 1.21 -> 0.048 / 0.023 / 0.019
(head layers 1-3), training accuracy 0.9994.

Data: generated (the UFM's features are free parameters) and scikit-learn's 8x8 digits (all 1,797 images,
the paper's training-set collapse; no held-out split is needed for the claim).
CPU setting: K = 4 classes, d = 16, M = 3 linear layers, 50 samples per class (balanced) and
n = (500, 200, 100, 50) (imbalanced); 1,500 full-batch Adam steps (the paper runs gradient descent; Adam
reaches the same minimiser faster here), weight decay 1e-3 on every layer and on the features. Digits:
MLP 64-128-64 (ReLU) + 3 linear layers of width 64, MSE, weight decay 1e-4, 400 full-batch Adam steps.
Full setting (config None): the paper's practical runs, MNIST / CIFAR-10 features from an MLP / ResNet18
backbone with deep linear heads of depth 1-9 (see the paper's Sec. 5; not run here: those need a GPU
image trainer and take hours), recorded in the config as dataset / backbone / head depths.
"""
import os
from typing import Dict, List, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter, read_metrics
from inception_zoo.theory import neural_collapse as ncl
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "neural_collapse"
  c.seed = 0
  c.ufm = ml_collections.ConfigDict(dict(
      num_classes=4, dim=16, depth=3, per_class=50, imbalanced=(500, 200, 100, 50), lambda_w=1e-3,
      lambda_h=1e-3, lr=0.02, steps=1500))
  c.digits = ml_collections.ConfigDict(dict(hidden=(128, 64), depth=3, loss="mse", lambda_w=1e-4, lr=3e-3,
                                            total_steps=400, log_every=50))
  if arg == "runlocal":
    c.full = ml_collections.ConfigDict()
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or None = the paper's full setting)")
  c.ufm.update(num_classes=10, dim=64, depth=3, per_class=100, imbalanced=(1000, 1000, 500, 500, 250, 250,
                                                                         100, 100, 50, 50), steps=30000)
  # The paper's practical experiments (Sec. 5): not run by this file's CPU path.
  c.full = ml_collections.ConfigDict(dict(datasets=("mnist", "cifar10"), backbones=("mlp", "resnet18"),
                                          head_depths=(1, 3, 6, 9), epochs=200))
  return c


def _fit_ufm(config, counts, loss: str, use_bias: bool, key):
  c = config.ufm
  labels = jnp.repeat(jnp.arange(c.num_classes), jnp.asarray(counts), total_repeat_length=sum(counts))
  head = ncl.DeepLinearHead(num_classes=c.num_classes, width=c.dim, depth=c.depth, use_bias=use_bias)
  k_h, k_w = jax.random.split(key)
  h0 = 0.1 * jax.random.normal(k_h, (labels.shape[0], c.dim))
  params = {"H": h0, "head": head.init(k_w, h0)["params"]}
  tx = optax.adam(optax.cosine_decay_schedule(c.lr, c.steps, alpha=0.01))
  params, losses = fit(lambda p, _: ncl.ufm_loss(p, head, labels, loss, c.lambda_w, c.lambda_h), params, tx,
                       c.steps, log_every=c.steps)
  return head, params, labels, float(losses[-1])


def run_ufm(config) -> Dict[str, float]:
  c = config.ufm
  out: Dict[str, float] = {}
  runs = {"balanced_mse_bias": ([c.per_class] * c.num_classes, "mse", True),
          "balanced_ce": ([c.per_class] * c.num_classes, "ce", False),
          "imbalanced_mse": (list(c.imbalanced), "mse", False)}
  for i, (name, (counts, loss, use_bias)) in enumerate(runs.items()):
    head, params, labels, final = _fit_ufm(config, counts, loss, use_bias, jax.random.key(config.seed + i))
    out[f"{name}/loss"] = final
    balanced = name.startswith("balanced")
    metrics = ncl.layer_metrics(head, params["head"], params["H"], labels, c.num_classes, balanced=balanced)
    out.update({f"{name}/{k}": float(v) for k, v in metrics.items()})
    if balanced:
      continue
    # The closed form: classifier row norms, class-mean norms entering every layer, orthogonality.
    pred = ncl.imbalanced_mse_prediction(counts, c.lambda_h, [c.lambda_w] * c.depth)
    _, per_layer = head.apply({"params": params["head"]}, params["H"])
    classifier = params["head"][f"linear{c.depth - 1}"]["kernel"].T
    got = [np.linalg.norm(ncl.class_means(h, labels, c.num_classes), axis=1) for h in per_layer]
    out[f"{name}/feature_norm_rel_error"] = float(np.max(np.abs(np.stack(got) / pred["feature_norms"] - 1)))
    out[f"{name}/classifier_norm_rel_error"] = float(
        np.max(np.abs(np.linalg.norm(classifier, axis=1) / pred["classifier_norms"] - 1)))
    last_means = ncl.class_means(per_layer[-1], labels, c.num_classes)
    cos = jnp.sum(classifier * last_means, 1) / (jnp.linalg.norm(classifier, axis=1) * got[-1])
    out[f"{name}/min_cos_classifier_mean"] = float(jnp.min(cos))  # NC3 for the orthogonal frame: aligned
    for k in range(c.num_classes):
      out[f"{name}/classifier_norm{k}"] = float(np.linalg.norm(classifier[k]))
      out[f"{name}/last_feature_norm{k}"] = float(got[-1][k])
      out[f"{name}/predicted_last_feature_norm{k}"] = float(pred["feature_norms"][-1, k])
      out[f"{name}/predicted_classifier_norm{k}"] = float(pred["classifier_norms"][k])
    for m, h in enumerate(per_layer, start=1):
      means = ncl.class_means(h, labels, c.num_classes)
      out[f"{name}/nc2_closed_form/layer{m}"] = float(ncl.nc2_orthogonal(means, pred["feature_norms"][m - 1]))
  return out


class DigitsNet(nn.Module):
  """An MLP backbone and a deep linear head; returns the logits and the features entering each head layer."""
  hidden: tuple
  depth: int

  @nn.compact
  def __call__(self, x):
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return ncl.DeepLinearHead(num_classes=10, width=self.hidden[-1], depth=self.depth, name="head")(x)


def run_digits(config, workdir: str) -> Tuple[Dict[str, float], List[dict]]:
  """Trains the digits network; returns the initial / final NC1 and accuracy, and the logged rows."""
  from sklearn.datasets import load_digits
  c = config.digits
  data = load_digits()
  x = jnp.asarray(data.data / 16.0, jnp.float32)
  y = jnp.asarray(data.target)
  net = DigitsNet(hidden=tuple(c.hidden), depth=c.depth)
  params = net.init(jax.random.key(config.seed), x)["params"]

  def loss_fn(p, _):
    logits, feats = net.apply({"params": p}, x)
    loss = ncl.classification_loss(logits, y, c.loss) + ncl.weight_decay(p, c.lambda_w)
    aux = {f"nc1/layer{m}": ncl.nc1(h, y, 10) for m, h in enumerate(feats, start=1)}
    return loss, {**aux, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}

  _, aux0 = loss_fn(params, None)
  writer = MetricWriter(os.path.join(workdir, "digits"), tensorboard=False)
  writer.write(0, {f"digits/{k}": v for k, v in aux0.items()})
  tx = optax.adam(optax.cosine_decay_schedule(c.lr, c.total_steps, alpha=0.01))
  fit(loss_fn, params, tx, c.total_steps, has_aux=True, log_every=c.log_every, writer=writer,
      prefix="digits/")
  writer.close()
  rows = read_metrics(os.path.join(workdir, "digits"))
  out = {f"digits/initial/{k}": float(v) for k, v in aux0.items()}
  out.update({f"digits/final/{k[len('digits/'):]}": float(v) for k, v in rows[-1].items()
              if k.startswith("digits/")})
  return out, rows


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  os.makedirs(workdir, exist_ok=True)
  result = run_ufm(config)
  digits, rows = run_digits(config, workdir)
  result.update(digits)
  plot(config, result, rows, workdir)
  return result


def plot(config, result: Dict[str, float], rows, workdir: str):
  plt = plots.pyplot()
  layers = range(1, config.ufm.depth + 1)
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  for name in ("balanced_mse_bias", "balanced_ce", "imbalanced_mse"):
    for ax, metric in zip(axes, ("nc1", "nc2")):
      ax.semilogy(list(layers), [max(result[f"{name}/{metric}/layer{m}"], 1e-16) for m in layers], "o-",
                  label=name + (" (rank 2)" if name == "balanced_ce" else ""))
  axes[0].set_title("NC1 per layer (UFM)")
  axes[1].set_title("NC2 per layer (ETF / orthogonal frame)")
  for ax in axes:
    ax.set_xlabel("linear layer")
    ax.set_xticks(list(layers))
    ax.legend(fontsize=7)
  plots.save(fig, os.path.join(workdir, "nc_ufm_layers.png"))
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for m in range(1, config.digits.depth + 1):
    ax.semilogy([r["step"] for r in rows], [r[f"digits/nc1/layer{m}"] for r in rows], "o-", label=f"layer {m}")
  ax.set_xlabel("full-batch step")
  ax.set_ylabel("NC1 (digits, MLP + deep linear head)")
  ax.legend()
  plots.save(fig, os.path.join(workdir, "nc_digits.png"))


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
