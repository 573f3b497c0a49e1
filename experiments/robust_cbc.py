"""Robust CBC (Saralajew, Rana, Villmann, Shaker, "A Robust Prototype-Based Network with Interpretable
RBF Classifier Foundations", AAAI 2025), paper 28 of the zoo: the shallow setting on digits.

Claim reproduced (Sec. 5, the shallow MNIST table): the stable CBC trained with the robustness loss
(hinge on its certified radius, Theorem 1) certifies far more test points at radius eps than the same
model trained with the plain margin loss, at similar clean accuracy, and the certificate is sound: an
L2 PGD attack of norm eps never flips a point certified at eps (asserted here, zero violations).
The shallow baselines (GLVQ with its (d- - d+)/2 certificate, an RBF network) are trained on the
same data; the original CBC is checked against its probability tree in the tests. Plot: certified
accuracy vs eps, PGD accuracy beside it, in WORKDIR/robust_cbc_certified.png.
  python -m experiments.robust_cbc --config=runlocal --workdir=workdirs/robust_cbc
CPU time here: 25 s of CPU (50 s wall on 2 shared cores). Measured on the 360 held-out digits (eps in
L2 on [0,1]^64; the mean distance between two digits is 3.0), clean accuracy: stable CBC with the
robust loss 0.928, with the margin loss 0.917, GLVQ 0.922, RBF network 0.950; certified accuracy at
eps 0.2 / 0.4 / 0.6 / 0.8: robust loss 0.775 / 0.569 / 0.342 / 0.153, margin loss 0.739 / 0.450 /
0.150 / 0.014 (GLVQ 0.783 / 0.567 / 0.294 / 0.103); PGD at eps 0.4 (20 steps): 0.750 / 0.708, and no
certified point flipped.

CPU setting (`runlocal`): scikit-learn's 8x8 digits (sklearn load_digits through
`inception_zoo.data.datasets.digits`: 1,437 train / 360 test), pixels in [0, 1]; the authors' MNIST
recipe (nec-research/enlaight `experiments/base_script.py`) scaled down: 20 components, one trainable
temperature per component, components initialised uniform in [0.45, 0.55], Adam, margin 0.3 for the
margin loss; full-batch steps through `inception_zoo.train.fullbatch.fit` (lr 0.02, 500 steps, 1,500
for the robust loss). Deviations, our choice for digits: one reasoning concept per class (the
authors use 2; with 2 the robust model reached only 0.87 in this budget), temperatures start at 2.0
(the authors' rule -(mean + std of distances) / ln(0.01) gives 0.77, from which the robust loss drove
the smallest temperature to 0, a degenerate way to shrink the negative radii of misclassified points),
robust margin 1.0 (the authors' 1.58 on MNIST is 16% of the mean MNIST distance; 1.0 is 33% of digits').

Full setting (`get_config()`, config only; its trainer is not implemented here): the deep CBC of the
paper, a ConvNeXt / ResNet-50 feature extractor with a CBC head on patch components, fine-grained
CUB-200-2011, Stanford Cars and Oxford-IIIT Pets at 224 px; the shallow MNIST comparison
(`--config=mnist`, also config only) has the authors' hyper-parameters (40 epochs, batch 128,
lr 5e-3, sigma 58, 2 concepts per class, robust margin 1.58, eps 0.5 / 1 / 1.58).
"""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter
from inception_zoo.proto import cbc
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="robust_cbc_digits", data="digits", seed=0, num_components=20, concepts_per_class=1,
      sigma_init=2.0, learning_rate=0.02, total_steps=500, robust_steps=1500, log_every=500, cbc_margin=0.3,
      robust_margin=1.0, eps=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0), pgd_eps=0.4, pgd_steps=20,
      backbone="", image_size=0))
  if arg == "runlocal":
    return c
  if arg == "mnist":
    c.update(name="robust_cbc_mnist", data="mnist", concepts_per_class=2, sigma_init=58.0,
             learning_rate=5e-3, robust_margin=1.58, eps=(0.5, 1.0, 1.58), pgd_eps=1.58, total_steps=40 * 469,
             robust_steps=40 * 469)
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, mnist, or none = the deep CUB-200 setting)")
  c.update(name="deep_cbc_cub200", data="cub200_2011", backbone="convnext_tiny", image_size=224,
           concepts_per_class=2, num_components=200 * 2, total_steps=0, robust_steps=0)
  return c


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


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
