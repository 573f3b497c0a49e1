"""Full-batch node classification on the `fit` loop: supervised training of a graph or hypergraph
network (DAGNN and the deep GCN of paper 22, the HGNN teacher of paper 18), and LightHGNN's
distillation of a trained HGNN into an MLP (Feng et al., "LightHGNN: Distilling Hypergraph Neural
Networks into MLPs for 100x Faster Inference", ICLR 2024, Sec. 4).

Both official codes (mengliu1998/DeeperGNN, iMoonLab/LightHGNN) train with PyTorch's Adam whose
`weight_decay` adds an L2 term to the gradient: `adam_l2` does the same. They keep the epoch with the
best validation score; here training runs a fixed number of steps (`fit` has no model selection).

LightHGNN (our reading of the paper and the official `trans_train.py`):
- The student loss is lamb * CE(labelled vertices) + (1 - lamb) * KD, KD = the mean over ALL vertices
  of KL(softmax(teacher / tau) || softmax(student / tau)) (transductive: the unlabelled vertices'
  features are seen, their labels never). The official default is lamb = 0 (pure distillation).
- LightHGNN+ adds to KD a topology-aware term. Hyperedge reliability: the teacher predicts on the
  clean features and on X * (1 + eps) * noise_level, eps ~ N(0, 1) (the official perturbation); the
  entropy of each vertex's prediction is averaged over every hyperedge, and
  rho_e = 1 - |dH_e| / max_e |dH_e| (hyperedges whose prediction entropy barely moves are reliable).
  Every step samples each hyperedge with probability rho_e and adds the mean over the sampled
  hyperedges of KL(teacher's || student's hyperedge-mean prediction), both softmax(. / tau). The
  official code passes probabilities as log-targets to `kl_div` and divides probabilities by tau;
  we use the plain KL of the tempered distributions, which is what the paper's formula states.
"""
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from inception_zoo.errors import UserError
from inception_zoo.graph.hypergraph import Hypergraph, v2e_mean
from inception_zoo.train.fullbatch import fit

# objective(logits, key) -> (loss, {name: scalar})
Objective = Callable[[jax.Array, jax.Array], Tuple[jax.Array, Dict[str, jax.Array]]]


def adam_l2(lr: float, weight_decay: float) -> optax.GradientTransformation:
  """PyTorch's Adam(lr, weight_decay): the L2 gradient wd * w goes through Adam's normalisation."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))


def masked_cross_entropy(logits, labels, mask) -> jax.Array:
  """Mean cross-entropy over the nodes where `mask` is true."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def accuracy(logits, labels, mask) -> float:
  """Top-1 accuracy over the nodes where `mask` is true."""
  hits = (jnp.argmax(logits, -1) == labels) & mask
  return float(jnp.sum(hits) / jnp.maximum(jnp.sum(mask), 1))


def supervised(labels, mask) -> Objective:
  """Cross-entropy on the labelled nodes."""
  def objective(logits, key):
    del key
    ce = masked_cross_entropy(logits, labels, mask)
    return ce, {"ce": ce}
  return objective


def kl_divergence(p_logits, q_logits, tau: float = 1.0) -> jax.Array:
  """Per row KL(softmax(p / tau) || softmax(q / tau))."""
  log_p, log_q = jax.nn.log_softmax(p_logits / tau, -1), jax.nn.log_softmax(q_logits / tau, -1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)


def hyperedge_reliability(teacher_fn: Callable[[jax.Array], jax.Array], x, hg: Hypergraph, key,
                          noise_level: float = 1.0) -> jax.Array:
  """LightHGNN+'s rho_e in [0, 1] per hyperedge from the teacher's entropy shift under feature noise;
  `teacher_fn(features) -> logits` runs the trained teacher in inference mode."""
  def edge_entropy(features):
    p = jax.nn.softmax(teacher_fn(features), -1)
    return v2e_mean(-jnp.sum(jax.scipy.special.xlogy(p, p), -1, keepdims=True), hg)[:, 0]

  noisy = x * (jax.random.normal(key, x.shape) + 1.0) * noise_level
  shift = jnp.abs(edge_entropy(noisy) - edge_entropy(x))
  return 1.0 - shift / jnp.maximum(jnp.max(shift), 1e-12)


def topology_kl(student_logits, teacher_logits, hg: Hypergraph, reliability, key, tau: float = 1.0) -> jax.Array:
  """Mean KL between the teacher's and the student's hyperedge-mean predictions over the hyperedges
  sampled with probability `reliability` (0 when none is sampled)."""
  mean_probs = lambda logits: v2e_mean(jax.nn.softmax(logits / tau, -1), hg)
  p_t, p_s = mean_probs(teacher_logits), mean_probs(student_logits)
  kl = jnp.sum(jax.scipy.special.xlogy(p_t, p_t) - jax.scipy.special.xlogy(p_t, p_s), -1)
  picked = jax.random.bernoulli(key, reliability)
  return jnp.sum(jnp.where(picked, kl, 0.0)) / jnp.maximum(jnp.sum(picked), 1)


def distillation(teacher_logits, labels, mask, *, lamb: float = 0.0, tau: float = 1.0,
                 hg: Optional[Hypergraph] = None, reliability=None) -> Objective:
  """LightHGNN's student objective; with `hg` and `reliability`, LightHGNN+'s."""
  if not 0 <= lamb <= 1:
    raise UserError(f"lamb weighs CE against distillation and must lie in [0, 1], got {lamb}")
  if (hg is None) != (reliability is None):
    raise UserError("the topology-aware term needs both the hypergraph and the hyperedge reliability")
  teacher_logits = jax.lax.stop_gradient(teacher_logits)

  def objective(logits, key):
    ce = masked_cross_entropy(logits, labels, mask)
    kd = jnp.mean(kl_divergence(teacher_logits, logits, tau))
    aux = {"ce": ce, "kd": kd}
    if hg is not None:
      aux["topology_kd"] = topology_kl(logits, teacher_logits, hg, reliability, key, tau)
      kd = kd + aux["topology_kd"]
    return lamb * ce + (1 - lamb) * kd, aux
  return objective


def train(apply_fn: Callable[[Any, jax.Array], jax.Array], params, objective: Objective, *, steps: int,
          lr: float, weight_decay: float, key, writer=None, prefix: str = "train/", log_every: int = 100):
  """Minimises `objective(apply_fn(params, dropout_key), key)` full-batch; `apply_fn` runs the model in
  training mode (dropout from the key). Returns (params, losses per step)."""
  def loss_fn(params, key):
    k_drop, k_obj = jax.random.split(key)
    return objective(apply_fn(params, k_drop), k_obj)
  return fit(loss_fn, params, adam_l2(lr, weight_decay), steps, key=key, has_aux=True, writer=writer,
             prefix=prefix, log_every=log_every)
