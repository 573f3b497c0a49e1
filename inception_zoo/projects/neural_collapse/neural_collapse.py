"""Neural collapse across deep linear layers (Dang, Tran, Osher, Tran-The, Ho & Nguyen, "Neural Collapse in
Deep Linear Networks: From Balanced to Imbalanced Data", ICML 2023), paper 14 of the zoo.

Metrics (per layer, features (N, d) with labels):
  NC1 = tr(Sigma_W Sigma_B^+) / K             within-class variability relative to between-class;
  NC2 = || G / ||G||_F - T / ||T||_F ||_F    class-mean Gram G against the target geometry T: the simplex
        ETF (I - 11^T / K, globally centred means) for balanced data, or, for imbalanced data with the
        bias-free MSE loss, the paper's general orthogonal frame: diag(||h_k||^2), uncentred means;
  NC3 = || W / ||W||_F - M^T / ||M||_F ||_F  classifier rows against the class means.

The model is the deep linear unconstrained-features model (UFM): free features H_1 (N, d), M linear
layers W_1 .. W_M (the last one K x d, optionally with an unregularised bias), weight decay on every
layer and on H_1; MSE (one-hot targets) or cross-entropy. `DeepLinearHead` is the same stack on top of a
real backbone.

Imbalanced, bias-free MSE (the paper's Sec. 4), in the closed form we derive (our reading; it has the
structure of the paper's theorem): features of a class collapse to their mean, so with D = diag(n_k)
and G = H_mean D^(1/2) the loss is 1/(2N) ||W_M..W_1 G - D^(1/2)||^2 plus weight decay, a deep linear
regression onto the diagonal target D^(1/2). Its minimiser is diagonal in the class basis: the product's
singular value s_k for class k minimises
    1/(2N) (s - sqrt(n_k))^2 + (M+1)/2 (lambda_H prod_m lambda_m)^(1/(M+1)) s^(2/(M+1))
(M = 1: s_k = max(sqrt(n_k) - N sqrt(lambda_H lambda_W), 0)), and every factor carries an equal share
c_k = (lambda_H prod lambda_m)^(1/(M+1)) s_k^(2/(M+1)) = lambda ||factor_k||^2. Hence orthogonal class
means and classifier rows with ||w_k|| = sqrt(c_k / lambda_M) (longer for larger classes) and
||h_k^(1)|| = sqrt(c_k / (lambda_H n_k)), multiplied by sqrt(c_k / lambda_m) at each layer m.
"""
from typing import Dict, List, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize_scalar

from inception_zoo.errors import UserError

LOSSES = ("mse", "ce")


def class_means(features: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """(K, d) class means."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
  return (onehot.T @ features) / jnp.maximum(onehot.sum(0), 1.0)[:, None]


def nc1(features: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """tr(Sigma_W Sigma_B^+) / K of features (N, d); 0 when every class has collapsed to its mean."""
  means = class_means(features, labels, num_classes)
  within = features - means[labels]
  sigma_w = within.T @ within / features.shape[0]
  between = means - means.mean(0)
  sigma_b = between.T @ between / num_classes
  return jnp.trace(sigma_w @ jnp.linalg.pinv(sigma_b, hermitian=True)) / num_classes


def _frobenius_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.linalg.norm(a / jnp.linalg.norm(a) - b / jnp.linalg.norm(b))


def nc2_etf(means: jax.Array) -> jax.Array:
  """Distance of the centred class means' normalised Gram to the simplex ETF's; 0 for an ETF."""
  k = means.shape[0]
  centred = means - means.mean(0)
  return _frobenius_distance(centred @ centred.T, jnp.eye(k) - 1.0 / k)


def nc2_orthogonal(means: jax.Array, norms: jax.Array | None = None) -> jax.Array:
  """Distance of the (uncentred) class means' normalised Gram to a general orthogonal frame diag(norms^2);
  with norms None, to the diagonal of the Gram itself (orthogonality only)."""
  gram = means @ means.T
  target = jnp.diag(jnp.diag(gram) if norms is None else jnp.asarray(norms) ** 2)
  return _frobenius_distance(gram, target)


def nc3(classifier: jax.Array, means: jax.Array, *, centre: bool = True) -> jax.Array:
  """|| W / ||W|| - M^T / ||M|| ||_F for classifier W (K, d) and class means (K, d) (centred for the
  ETF case, uncentred for the bias-free imbalanced one)."""
  m = means - means.mean(0) if centre else means
  return _frobenius_distance(classifier, m)


class DeepLinearHead(nn.Module):
  """M linear layers without activations (bias only on the last, if asked); returns the logits and the
  features entering every layer."""
  num_classes: int
  width: int
  depth: int = 3
  use_bias: bool = False

  @nn.compact
  def __call__(self, h) -> Tuple[jax.Array, List[jax.Array]]:
    features = []
    for m in range(self.depth):
      features.append(h)
      last = m == self.depth - 1
      h = nn.Dense(self.num_classes if last else self.width, use_bias=self.use_bias and last,
                   kernel_init=nn.initializers.orthogonal(), name=f"linear{m}")(h)
    return h, features


def weight_decay(params, lambda_w: float) -> jax.Array:
  """lambda_w / 2 times the squared norm of every kernel (biases are not regularised)."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  return 0.5 * lambda_w * sum(jnp.sum(v ** 2) for path, v in leaves if "kernel" in jax.tree_util.keystr(path))


def classification_loss(logits: jax.Array, labels: jax.Array, loss: str) -> jax.Array:
  """Mean MSE to one-hot targets (with the paper's 1/2) or mean cross-entropy."""
  if loss not in LOSSES:
    raise UserError(f"unknown loss '{loss}' ({', '.join(LOSSES)})")
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  if loss == "mse":
    return 0.5 * jnp.mean(jnp.sum((logits - onehot) ** 2, axis=-1))
  return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1))


def ufm_loss(params, head: DeepLinearHead, labels: jax.Array, loss: str, lambda_w: float,
             lambda_h: float) -> jax.Array:
  """The deep linear UFM objective; params = {"H": (N, d) free features, "head": the head's params}."""
  logits, _ = head.apply({"params": params["head"]}, params["H"])
  reg_h = 0.5 * lambda_h * jnp.sum(params["H"] ** 2)
  return classification_loss(logits, labels, loss) + weight_decay(params["head"], lambda_w) + reg_h


def layer_metrics(head: DeepLinearHead, head_params, features: jax.Array, labels: jax.Array,
                  num_classes: int, *, balanced: bool) -> Dict[str, jax.Array]:
  """NC1 and NC2 of the features entering every layer (layer 1 = the free / backbone features) and NC3 of
  the last layer; NC2 against the ETF (balanced) or the orthogonal frame (imbalanced)."""
  _, per_layer = head.apply({"params": head_params}, features)
  out = {}
  for m, h in enumerate(per_layer, start=1):
    means = class_means(h, labels, num_classes)
    out[f"nc1/layer{m}"] = nc1(h, labels, num_classes)
    out[f"nc2/layer{m}"] = nc2_etf(means) if balanced else nc2_orthogonal(means)
  classifier = head_params[f"linear{head.depth - 1}"]["kernel"].T
  out["nc3"] = nc3(classifier, means, centre=balanced)
  return out


def imbalanced_mse_prediction(counts: Sequence[int], lambda_h: float, lambda_ws: Sequence[float]
                              ) -> Dict[str, np.ndarray]:
  """The global minimiser's geometry for the bias-free deep linear UFM with MSE (derivation above).

  counts: n_k per class; lambda_h: the features' weight decay, with the loss's normalisation
  lambda_h / (2N) ||H||^2; lambda_ws: the M layers' weight decays. Returns s (K,), the class-mean norms
  entering each layer feature_norms (M, K) and the last layer's row norms classifier_norms (K,).
  """
  n = np.asarray(counts, np.float64)
  lambdas = np.asarray(lambda_ws, np.float64)
  if n.ndim != 1 or np.any(n <= 0) or lambdas.ndim != 1 or lambdas.size == 0 or lambda_h <= 0 \
      or np.any(lambdas <= 0):
    raise UserError("imbalanced_mse_prediction wants positive class counts and weight decays")
  depth, total = lambdas.size, n.sum()
  scale = (lambda_h * np.prod(lambdas)) ** (1.0 / (depth + 1))

  def objective(s, nk):
    return (s - np.sqrt(nk)) ** 2 / (2 * total) + (depth + 1) / 2 * scale * s ** (2.0 / (depth + 1))

  s = np.empty_like(n)
  for k, nk in enumerate(n):  # the s^(2/(M+1)) term is concave: compare the interior minimum with s = 0
    best = minimize_scalar(objective, bounds=(0.0, np.sqrt(nk)), args=(nk,), method="bounded",
                           options={"xatol": 1e-12}).x
    s[k] = best if objective(best, nk) < objective(0.0, nk) else 0.0
  c = scale * s ** (2.0 / (depth + 1))
  norms = [np.sqrt(c / (lambda_h * n))]
  for lam in lambdas[:-1]:
    norms.append(norms[-1] * np.sqrt(c / lam))
  return {"s": s, "feature_norms": np.stack(norms), "classifier_norms": np.sqrt(c / lambdas[-1])}
