"""robust_cbc's experiment driver (README.md; the recipes are experiments/robust_cbc.py)."""
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
from inception_zoo.projects.robust_cbc import cbc
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


def _models(config):
  kw = dict(num_classes=10, num_components=config.num_components, sigma_init=config.sigma_init)
  return {
      "robust_cbc": (cbc.CBC(concepts_per_class=config.concepts_per_class, **kw), "robust"),
      "stable_cbc": (cbc.CBC(concepts_per_class=config.concepts_per_class, **kw), "margin"),
      "glvq": (cbc.GLVQ(num_classes=10, prototypes_per_class=config.num_components // 10), "glvq"),
      "rbf": (cbc.RBFNetwork(**kw), "ce"),
  }


def _loss(model, kind, config, x, y):
  def loss_fn(params, key):
    del key
    scores, aux = model.apply({"params": params}, x)
    if kind == "robust":
      radius = cbc.certified_radius(aux["detections"], aux["positive"], aux["negative"], aux["sigma"],
                                    model.concept_labels(), y)
      per_sample = cbc.robust_cbc_loss(radius, config.robust_margin)
    elif kind == "margin":
      per_sample = cbc.margin_loss(scores, y, config.cbc_margin)
    elif kind == "glvq":
      per_sample = cbc.glvq_loss(aux["distances"], model.prototype_labels(), y)
    else:
      per_sample = optax.softmax_cross_entropy_with_integer_labels(scores, y)
    return jnp.mean(per_sample), {"accuracy": cbc.accuracy(scores, y)}
  return loss_fn


def certified_radii(model, params, x, y) -> jax.Array:
  """Per test point, the certified L2 radius (negative = misclassified)."""
  scores, aux = model.apply({"params": params}, x)
  if isinstance(model, cbc.GLVQ):
    return cbc.glvq_certified_radius(aux["distances"], model.prototype_labels(), y)
  return cbc.certified_radius(aux["detections"], aux["positive"], aux["negative"], aux["sigma"],
                              model.concept_labels(), y)


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  if config.data != "digits":
    raise UserError(f"the '{config.data}' setting is given as config only; this experiment runs "
                    f"the shallow digits setting (--config=runlocal)")
  x_train, y_train = datasets.digits_arrays("train")
  x_test, y_test = datasets.digits_arrays("test")
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  key = jax.random.key(config.seed)
  result: Dict[str, float] = {}
  radii = {}
  trained = {}
  for name, (model, kind) in _models(config).items():
    params = model.init(key, x_train[:1])["params"]
    # The hinge on the radius gives no gradient to points beyond the margin and a weak one to the
    # misclassified (their radius is a log), so it needs more steps than the margin losses.
    steps = config.robust_steps if kind == "robust" else config.total_steps
    params, _ = fit(_loss(model, kind, config, x_train, y_train), params, optax.adam(config.learning_rate),
                    steps, log_every=config.log_every, has_aux=True, writer=writer,
                    prefix=f"{name}/train/")
    trained[name] = (model, params)
    scores, _ = model.apply({"params": params}, x_test)
    result[f"{name}/accuracy"] = float(cbc.accuracy(scores, y_test))
    if name in ("robust_cbc", "stable_cbc", "glvq"):
      radii[name] = np.asarray(certified_radii(model, params, x_test, y_test))
      for eps in config.eps:
        result[f"{name}/certified@{eps:g}"] = float(np.mean(radii[name] > eps))
  # The certificate is sound: PGD at pgd_eps flips no point certified at pgd_eps.
  for name in ("robust_cbc", "stable_cbc"):
    model, params = trained[name]
    score_fn = lambda z: model.apply({"params": params}, z)[0]
    x_adv = cbc.pgd_l2(score_fn, x_test, y_test, config.pgd_eps, steps=config.pgd_steps)
    correct_adv = np.asarray(jnp.argmax(score_fn(x_adv), -1) == y_test)
    certified = radii[name] > config.pgd_eps
    result[f"{name}/pgd_accuracy@{config.pgd_eps:g}"] = float(correct_adv.mean())
    result[f"{name}/pgd_violations"] = float(np.sum(certified & ~correct_adv))
    if result[f"{name}/pgd_violations"]:
      raise AssertionError(f"{name}: PGD flipped {int(result[f'{name}/pgd_violations'])} certified points")
  writer.write(config.robust_steps, result)
  writer.close()
  plot(config, result, os.path.join(workdir, "robust_cbc_certified.png"))
  return result


def plot(config, result: Dict[str, float], path: str):
  plt = plots.pyplot()
  eps = [0.0, *config.eps]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  labels = {"robust_cbc": "stable CBC, robust loss", "stable_cbc": "stable CBC, margin loss",
            "glvq": "GLVQ"}
  for name, label in labels.items():
    line, = ax.plot(eps, [result[f"{name}/accuracy"]] + [result[f"{name}/certified@{e:g}"] for e in config.eps],
                    "o-", label=label)
    if f"{name}/pgd_accuracy@{config.pgd_eps:g}" in result:
      ax.plot([config.pgd_eps], [result[f"{name}/pgd_accuracy@{config.pgd_eps:g}"]], "x", ms=9,
              color=line.get_color())
  ax.set_xlabel("L2 radius eps (x: accuracy under PGD)")
  ax.set_ylabel("certified test accuracy (digits)")
  ax.legend()
  plots.save(fig, path)
