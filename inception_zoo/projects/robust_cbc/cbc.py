"""Classification-by-Components (CBC) and its robust extension, with the shallow prototype baselines.

Saralajew, Rana, Villmann, Shaker, "A Robust Prototype-Based Network with Interpretable RBF Classifier
Foundations", AAAI 2025 (paper 28 of the zoo); original CBC: Saralajew, Holdijk, Rees, Asan, Villmann,
"Classification-by-Components: Probabilistic Modeling of Reasoning over a Set of Components",
NeurIPS 2019. Formulas follow the authors' library (nec-research/enlaight, `core/reasoning.py`,
`core/loss.py`), where the paper's extension is called "stable CBC".

- Detection: d_k(x) = exp(-||f(x) - w_k|| / sigma_k), Euclidean (not squared) distance, one trainable
  temperature per component (|sigma| + eps keeps it positive).
- Original CBC: per component k and reasoning concept c, positive / negative / indefinite requiredness
  (r+, r-, r0, summing to 1); p_c = (d . (r+ - r-) + sum_k r-) / sum_k (r+ + r-). The indefinite
  state drops out of the numerator, which is what allows contradicting explanations.
- Stable CBC (the paper's extension): no indefinite state; reasoning probabilities P+_kc, P-_kc with
  sum_k (P+_kc + P-_kc) = 1 (one softmax over the 2K entries per concept, i.e. class-wise component
  prior P+ + P- times requiredness), p_c = d . (P+_c - P-_c) + sum_k P-_kc.
- Certificate (the paper's Theorem 1): a perturbation of norm eps changes every distance by at most eps,
  so d_k(x + delta) lies in [d_k t, d_k / t] with t = exp(-eps / min sigma). The worst case of
  p_i - p_j is t (A) - (B) / t + c with A = d . (P+_i + P-_j), B = d . (P-_i + P+_j),
  c = sum(P-_i) - sum(P-_j); its positive root gives the radius
  sigma_min log((c + sqrt(c^2 + 4 A B)) / (2 B)), maximised over the concepts of the predicted class and
  minimised over the others. Negative for a misclassified point. The robust loss is
  relu(margin - radius) with the radius taken w.r.t. the true label.
- GLVQ (Sato & Yamada 1996): loss (d+ - d-) / (d+ + d-); its certified radius (d- - d+) / 2
  (Saralajew et al. 2020, "Fast adversarial robustness certification of nearest prototype classifiers").
- RBF network: the same detections feeding a linear layer and a softmax.
Our reading: the original CBC's requiredness uses the authors' "breaking chopstick" decoding
(r+ = q0, r- = (1 - q0) q1) with q = sigmoid(logits) instead of their clamped projected steps, so that
training is plain gradient descent.
"""
from typing import Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError
from inception_zoo.layers import pairwise_distance

EPS = 1e-8


def detection(distances: jax.Array, sigma: jax.Array) -> jax.Array:
  return jnp.exp(-distances / sigma)


def cbc_reasoning(d: jax.Array, positive: jax.Array, negative: jax.Array) -> jax.Array:
  """Original CBC: d (N, K), requiredness r+ / r- (K, R) -> concept probabilities (N, R)."""
  return (d @ (positive - negative) + negative.sum(0)) / (positive + negative).sum(0)


def stable_cbc_reasoning(d: jax.Array, positive: jax.Array, negative: jax.Array) -> jax.Array:
  """Stable CBC: d (N, K), reasoning P+ / P- (K, R) summing to 1 per concept -> probabilities (N, R)."""
  return d @ (positive - negative) + negative.sum(0)


def class_scores(concept_probs: jax.Array, concept_labels: jax.Array, num_classes: int) -> jax.Array:
  """Per class, the best of its reasoning concepts (N, C): the authors' winner over concepts."""
  onehot = jax.nn.one_hot(concept_labels, num_classes, dtype=bool)  # (R, C)
  return jnp.max(jnp.where(onehot[None], concept_probs[..., None], -jnp.inf), axis=1)


def certified_radius(d: jax.Array, positive: jax.Array, negative: jax.Array, sigma: jax.Array,
                     concept_labels: jax.Array, labels: jax.Array) -> jax.Array:
  """Stable CBC's L2 robustness lower bound (N,) w.r.t. `labels`: no perturbation of smaller norm
  changes the class; negative when the point is misclassified (Theorem 1, non-squared distance)."""
  a = d @ positive  # (N, R): d . P+
  b = d @ negative  # (N, R): d . P-
  big_a = a[:, :, None] + b[:, None, :]  # [n, i, j]: d . (P+_i + P-_j)
  big_b = b[:, :, None] + a[:, None, :]  # d . (P-_i + P+_j)
  neg_sum = negative.sum(0)
  c = neg_sum[:, None] - neg_sum[None, :]
  root = (c + jnp.sqrt(jnp.maximum(c * c + 4 * big_a * big_b, EPS))) / (2 * jnp.maximum(big_b, EPS))
  radius = jnp.min(sigma) * jnp.log(jnp.maximum(root, EPS))  # (N, R, R)
  correct = concept_labels[None, :] == labels[:, None]  # (N, R)
  # min over concepts j of other classes, then max over the concepts i of the label's class
  worst = jnp.min(jnp.where(correct[:, None, :], jnp.inf, radius), axis=2)
  return jnp.max(jnp.where(correct, worst, -jnp.inf), axis=1)


def robust_cbc_loss(radius: jax.Array, margin: float) -> jax.Array:
  """The paper's robustness-optimising loss per sample: hinge on the certified radius."""
  return jax.nn.relu(margin - radius)


def margin_loss(scores: jax.Array, labels: jax.Array, margin: float) -> jax.Array:
  """The original CBC loss: relu(best wrong class score - true class score + margin) per sample."""
  true = jnp.take_along_axis(scores, labels[:, None], 1)[:, 0]
  wrong = jnp.max(jnp.where(jax.nn.one_hot(labels, scores.shape[1], dtype=bool), -jnp.inf, scores), 1)
  return jax.nn.relu(wrong - true + margin)


def _closest(distances, prototype_labels, labels):
  same = prototype_labels[None, :] == labels[:, None]
  return (jnp.min(jnp.where(same, distances, jnp.inf), 1),
          jnp.min(jnp.where(same, jnp.inf, distances), 1))


def glvq_loss(distances: jax.Array, prototype_labels: jax.Array, labels: jax.Array) -> jax.Array:
  d_plus, d_minus = _closest(distances, prototype_labels, labels)
  return (d_plus - d_minus) / (d_plus + d_minus + EPS)


def glvq_certified_radius(distances: jax.Array, prototype_labels: jax.Array,
                          labels: jax.Array) -> jax.Array:
  """Nearest-prototype L2 certificate (d- - d+) / 2 (N,); negative when misclassified."""
  d_plus, d_minus = _closest(distances, prototype_labels, labels)
  return (d_minus - d_plus) / 2


def _uniform_init(low: float, high: float) -> Callable:
  return lambda key, shape: jax.random.uniform(key, shape, minval=low, maxval=high)


class CBC(nn.Module):
  """CBC head on features (N, D): components, per-component temperatures and reasoning.

  Returns (class scores (N, C), aux) with the detections, distances, decoded reasoning and concept
  probabilities; `stable=True` is the paper's extension, `stable=False` the original CBC.
  Components start uniform in [0.45, 0.55] (the authors' init for inputs in [0, 1]).
  """
  num_classes: int
  num_components: int = 20
  concepts_per_class: int = 2
  stable: bool = True
  sigma_init: float = 1.0
  component_init: Tuple[float, float] = (0.45, 0.55)

  def concept_labels(self) -> jax.Array:
    return jnp.repeat(jnp.arange(self.num_classes), self.concepts_per_class)

  @nn.compact
  def __call__(self, features: jax.Array, *, train: bool = False):
    del train
    if features.ndim != 2:
      raise UserError(f"CBC expects features of shape (batch, dim); got {features.shape}")
    k, r = self.num_components, self.num_classes * self.concepts_per_class
    w = self.param("components", _uniform_init(*self.component_init), (k, features.shape[-1]))
    sigma = jnp.abs(self.param("sigma", nn.initializers.constant(self.sigma_init), (k,))) + EPS
    distances = pairwise_distance(features, w)
    d = detection(distances, sigma)
    if self.stable:
      # one softmax over positive and negative entries: sum_k (P+ + P-) = 1 for every concept
      logits = self.param("reasoning", _uniform_init(0.0, 1.0), (2 * k, r))
      probs = jax.nn.softmax(logits, axis=0)
      positive, negative = probs[:k], probs[k:]
      concept = stable_cbc_reasoning(d, positive, negative)
    else:
      q = jax.nn.sigmoid(self.param("requiredness", _uniform_init(-0.5, 0.5), (2, k, r)))
      positive, negative = q[0], (1 - q[0]) * q[1]  # breaking chopstick; indefinite = rest
      concept = cbc_reasoning(d, positive, negative)
    scores = class_scores(concept, self.concept_labels(), self.num_classes)
    aux = dict(detections=d, distances=distances, sigma=sigma, positive=positive, negative=negative,
               concept_probs=concept)
    return scores, aux


class DeepCBC(nn.Module):
  """The deep variant: any feature extractor followed by a CBC head. The certificate of the head
  then holds in feature space; in input space it needs the extractor's Lipschitz constant."""
  backbone: nn.Module
  head: CBC

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False):
    features = self.backbone(x, train=train)
    features = features[0] if isinstance(features, tuple) else features
    scores, aux = self.head(features.reshape(features.shape[0], -1), train=train)
    return scores, {**aux, "features": features}


class GLVQ(nn.Module):
  """Nearest-prototype classifier: returns negative distances as scores and the distances."""
  num_classes: int
  prototypes_per_class: int = 2
  component_init: Tuple[float, float] = (0.45, 0.55)

  def prototype_labels(self) -> jax.Array:
    return jnp.repeat(jnp.arange(self.num_classes), self.prototypes_per_class)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False):
    del train
    shape = (self.num_classes * self.prototypes_per_class, x.shape[-1])
    w = self.param("prototypes", _uniform_init(*self.component_init), shape)
    distances = pairwise_distance(x, w)
    per_class = jnp.min(distances.reshape(x.shape[0], self.num_classes, -1), axis=-1)
    return -per_class, {"distances": distances}


class RBFNetwork(nn.Module):
  """RBF network: detections exp(-||x - w_k|| / sigma_k) into a linear layer (logits)."""
  num_classes: int
  num_components: int = 20
  sigma_init: float = 1.0
  component_init: Tuple[float, float] = (0.45, 0.55)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False):
    del train
    w = self.param("components", _uniform_init(*self.component_init), (self.num_components, x.shape[-1]))
    sigma = jnp.abs(self.param("sigma", nn.initializers.constant(self.sigma_init), (self.num_components,)))
    d = detection(pairwise_distance(x, w), sigma + EPS)
    return nn.Dense(self.num_classes, name="head")(d), {"detections": d}


def pgd_l2(score_fn: Callable[[jax.Array], jax.Array], x: jax.Array, labels: jax.Array, eps: float, *,
           steps: int = 20, step_size: Optional[float] = None, clip: Tuple[float, float] = (0.0, 1.0)
           ) -> jax.Array:
  """L2 projected gradient ascent on the margin (best wrong score - true score), per sample;
  returns the perturbed inputs, inside the eps-ball and the box `clip`."""
  step_size = 2.5 * eps / steps if step_size is None else step_size

  def margin(z):
    s = score_fn(z)
    true = jnp.take_along_axis(s, labels[:, None], 1)[:, 0]
    wrong = jnp.max(jnp.where(jax.nn.one_hot(labels, s.shape[1], dtype=bool), -jnp.inf, s), 1)
    return jnp.sum(wrong - true)

  def norm(v):
    return jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, 1) + 1e-12).reshape((-1,) + (1,) * (v.ndim - 1))

  def step(z, _):
    g = jax.grad(margin)(z)
    z = z + step_size * g / norm(g)
    delta = z - x
    delta = delta * jnp.minimum(1.0, eps / norm(delta))
    return jnp.clip(x + delta, *clip), None

  z, _ = jax.lax.scan(step, x, None, length=steps)
  return z


def accuracy(scores: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(jnp.argmax(scores, -1) == labels)


