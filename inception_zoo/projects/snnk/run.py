"""SNNK's CPU setting: (a) kernel estimation error against the number of random features, (b) the
fully bundled network solved in closed form against Adam, (c) SNNK adapters against bottleneck adapters
on a frozen digits MLP (README.md; the recipes are experiments/snnk.py)."""
import os
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.snnk import snnk
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  if "glue" in config:
    raise UserError("the GLUE / BERT-base setting is config only (no BERT or GLUE here); run --config=runlocal")
  os.makedirs(workdir, exist_ok=True)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  key = jax.random.key(config.seed)
  k_kernel, k_bundle, k_adapter = jax.random.split(key, 3)
  result: Dict[str, float] = {}
  curves = kernel_estimation(config.kernel, k_kernel, result)
  bundling(config.bundling, k_bundle, writer, result)
  adapters(config.adapter, k_adapter, writer, result)
  writer.close()
  plot(config, curves, result, os.path.join(workdir, "snnk.png"))
  return result


# (a) Kernel estimation error against m.

def kernel_estimation(c, key, result) -> Dict[str, np.ndarray]:
  kx, kw, kb, kd = jax.random.split(key, 4)
  # Inputs of norm about 0.7: the cos URF's variance grows like exp(|x|^2).
  x = jax.random.normal(kx, (c.pairs, c.dim)) * 0.7 / np.sqrt(c.dim)
  w = jax.random.normal(kw, (c.pairs, c.dim)) * 0.7 / np.sqrt(c.dim)
  b = jax.random.uniform(kb, (c.pairs,), minval=-1.0, maxval=1.0)
  curves = {}
  for kind in c.kinds:
    exact = snnk.arccos_kernel(x, w) if kind == "relu" else snnk.activation(kind)(jnp.sum(x * w, -1) + b)

    @jax.jit
    def estimates(k, kind=kind):
      """One draw of max(m) features; the estimate with m features is the mean over the first m."""
      m_max = max(c.num_features)
      rf = snnk.draw(k, kind, m_max, c.dim)
      psi = snnk.weight_features(rf, w.T, None if kind == "relu" else b)  # (F, pairs)
      terms = (snnk.input_features(rf, x) * psi.T).reshape(c.pairs, -1, m_max).sum(1) * m_max
      return jnp.stack([terms[:, :m].mean(-1) for m in c.num_features])  # (len(ms), pairs)

    keys = jax.random.split(jax.random.fold_in(kd, len(kind)), c.repeats)
    errors = np.asarray(jnp.mean(jnp.abs(jax.vmap(estimates)(keys) - exact), axis=(0, 2)))
    for m, e in zip(c.num_features, errors):
      result[f"kernel/{kind}/error_m{m}"] = float(e)
    slope = np.polyfit(np.log(c.num_features), np.log(errors), 1)[0]
    result[f"kernel/{kind}/slope"] = float(slope)
    curves[kind] = errors
  return curves


# (b) The fully bundled network: closed form against gradient descent.

def diabetes_split(test_fraction: float, seed: int):
  from sklearn.datasets import load_diabetes
  from sklearn.model_selection import train_test_split
  x, y = load_diabetes(return_X_y=True)
  xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed)
  mx, sx, my, sy = xtr.mean(0), xtr.std(0), ytr.mean(), ytr.std()
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return f32((xtr - mx) / sx), f32((ytr - my) / sy), f32((xte - mx) / sx), f32((yte - my) / sy)


def bundling(c, key, writer, result):
  xtr, ytr, xte, yte = diabetes_split(c.test_fraction, 0)
  # ReLU-SNNK has no bias: a constant coordinate on the inputs carries it; inputs scaled to about unit norm.
  aug = lambda x: jnp.concatenate([x, jnp.ones((x.shape[0], 1))], -1) / np.sqrt(x.shape[1] + 1)
  rf = snnk.draw(key, "relu", c.num_random_features, xtr.shape[1] + 1)
  ftr, fte = snnk.input_features(rf, aug(xtr)), snnk.input_features(rf, aug(xte))
  mse = lambda pred, y: float(jnp.mean((pred - y) ** 2))

  psi = snnk.bundled_fit(ftr, ytr, c.ridge)
  result["bundle/closed_form/train_mse"] = mse(ftr @ psi, ytr)
  result["bundle/closed_form/test_mse"] = mse(fte @ psi, yte)

  # The same model and objective (MSE + ridge penalty), trained by Adam from zero.
  objective = lambda p, _: jnp.mean((ftr @ p - ytr) ** 2) + c.ridge * jnp.sum(p ** 2) / ftr.shape[0]
  p_gd, _ = fit(objective, jnp.zeros_like(psi), optax.adam(c.lr), c.steps, log_every=c.steps, writer=writer,
                prefix="bundle/gd/")
  result["bundle/gd/train_mse"] = mse(ftr @ p_gd, ytr)
  result["bundle/gd/test_mse"] = mse(fte @ p_gd, yte)


# (c) SNNK adapters against a standard adapter on a frozen digits MLP.

class AdaptedMLP(nn.Module):
  """64-width-width ReLU MLP; `adapter` (none, "snnk", "bottleneck") after each hidden layer."""
  num_classes: int
  width: int = 128
  adapter: str = "none"
  num_random_features: int = 8
  bottleneck: int = 16

  @nn.compact
  def __call__(self, x):
    for i in range(2):
      x = nn.relu(nn.Dense(self.width, name=f"fc{i}")(x))
      if self.adapter == "snnk":
        x = snnk.SNNKAdapter(self.num_random_features, seed=i, name=f"adapter{i}")(x)
      elif self.adapter == "bottleneck":
        x = snnk.BottleneckAdapter(self.bottleneck, name=f"adapter{i}")(x)
    return nn.Dense(self.num_classes, name="head")(x)


def digits_split(seed: int):
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  x, y = load_digits(return_X_y=True)
  xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.4, random_state=seed, stratify=y)
  return tuple(jnp.asarray(a, jnp.float32 if a.dtype.kind == "f" else jnp.int32) for a in (xtr, xte, ytr, yte))


def count(tree) -> int:
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(tree)))


def adapters(c, key, writer, result):
  xtr, xte, ytr, yte = digits_split(0)
  old_tr, new_tr, new_te = ytr < 5, ytr >= 5, yte >= 5
  ce = lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  k_pre, k_ft = jax.random.split(key)

  base = AdaptedMLP(5, c.width)
  params = base.init(k_pre, xtr[:1])["params"]
  x_old, y_old = xtr[old_tr], ytr[old_tr]
  pre_loss = lambda p, _: ce(base.apply({"params": p}, x_old), y_old)
  pretrained, _ = fit(pre_loss, params, optax.adam(c.lr), c.pretrain_steps, log_every=c.pretrain_steps,
                      writer=writer, prefix="adapter/pretrain/")
  backbone = {k: v for k, v in pretrained.items() if k.startswith("fc")}

  x_new, y_new, x_te, y_te = xtr[new_tr], ytr[new_tr] - 5, xte[new_te], yte[new_te] - 5
  variants = {"full": "none", "head": "none", "snnk": "snnk", "bottleneck": "bottleneck"}
  for name, adapter in variants.items():
    model = AdaptedMLP(5, c.width, adapter, c.num_random_features, c.bottleneck)
    init = model.init(k_ft, x_new[:1])["params"]
    frozen = {} if name == "full" else backbone
    trainable = {k: v for k, v in {**init, **backbone}.items() if k not in frozen}
    loss = lambda p, _, model=model, frozen=frozen: ce(model.apply({"params": {**frozen, **p}}, x_new), y_new)
    lr = c.full_lr if name == "full" else c.lr
    trained, _ = fit(loss, trainable, optax.adam(lr), c.steps, log_every=c.steps, writer=writer,
                     prefix=f"adapter/{name}/")
    logits = model.apply({"params": {**frozen, **trained}}, x_te)
    result[f"adapter/{name}/top1"] = float(jnp.mean(jnp.argmax(logits, -1) == y_te))
    result[f"adapter/{name}/trainable_params"] = float(count(trained))
    result[f"adapter/{name}/adapter_params"] = float(count({k: v for k, v in trained.items()
                                                            if k.startswith("adapter")}))
  result["adapter/param_reduction"] = (result["adapter/bottleneck/adapter_params"]
                                       / result["adapter/snnk/adapter_params"])
  result["adapter/trainable_reduction"] = (result["adapter/bottleneck/trainable_params"]
                                           / result["adapter/snnk/trainable_params"])


def plot(config, curves, result, path):
  plt = plots.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  ms = np.asarray(config.kernel.num_features)
  for kind, errors in curves.items():
    axes[0].loglog(ms, errors, "o-", label=f"{kind} (slope {result[f'kernel/{kind}/slope']:.2f})")
  axes[0].loglog(ms, curves[config.kernel.kinds[0]][0] * np.sqrt(ms[0] / ms), "k:", label="m^-1/2")
  axes[0].set(xlabel="random features m", ylabel="mean |estimate - exact|", title="(a) kernel estimation")
  axes[0].legend(fontsize=8)
  axes[1].bar(["closed form\n(no backprop)", "Adam"], [result[f"bundle/{n}/test_mse"] for n in ("closed_form", "gd")])
  axes[1].set(ylabel="held-out MSE (diabetes)", title="(b) fully bundled network")
  variants = ["full", "bottleneck", "snnk", "head"]
  params = [result[f"adapter/{v}/trainable_params"] for v in variants]
  accs = [result[f"adapter/{v}/top1"] for v in variants]
  axes[2].scatter(params, accs)
  for v, p, a in zip(variants, params, accs):
    axes[2].annotate(v, (p, a), fontsize=8)
  axes[2].set(xscale="log", xlabel="trainable parameters", ylabel="held-out top-1 (digits 5-9)",
              title="(c) adapters on a frozen MLP")
  plots.save(fig, path)
