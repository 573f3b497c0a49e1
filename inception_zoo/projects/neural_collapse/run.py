"""neural_collapse's experiment driver (README.md; the recipes are experiments/neural_collapse.py)."""
import os
from typing import Dict, List, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.metrics import MetricWriter, read_metrics
from inception_zoo.projects.neural_collapse import neural_collapse as ncl
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


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
