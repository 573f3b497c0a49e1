"""Softmax Gaussian mixture of experts with a temperature (Nguyen, Akbarian & Ho, "Is Temperature Sample
Efficient for Softmax Gaussian Mixture of Experts?", ICML 2024), paper 13 of the zoo.

    p(y | x) = sum_i G_i(x) N(y | a_i^T x + b_i, nu_i)

with k experts and one of two gates:
  "temperature"  G(x) = softmax((beta1_i^T x + beta0_i) / tau)      (dense-to-sparse gate, learnable tau)
  "activation"   G(x) = softmax(sigma(beta1_i^T x) / tau + beta0_i)  (the paper's proposed gate)
Our reading of the activation gate: the activation acts on the linear part only and beta0 sits outside
the temperature, so exp(beta0_i) are the mixing weights as in the plain softmax-gating analysis; sigma
is tanh (it meets the paper's linear-independence condition on sigma and its derivatives). The last
expert is the softmax's reference (beta1 = beta0 = 0), which removes the translation invariance.

A fitted mixing measure is compared with the true one by the Voronoi loss (our reading, in the form of
the authors' earlier softmax-gating code, Trung-TinNGUYEN/CRPE-SGaME `discrepancies.py`): every fitted
atom joins the cell of its nearest true atom; a cell's summed weight is compared with the true weight;
an atom alone in its cell pays its parameter distances to the first power; atoms sharing a cell of size
m pay |d beta1|^r, |d b|^r, |d a|^(r/2), |d nu|^(r/2) and |d tau|^r with r = rbar(m) = 4, 6, ... The
weights are exp(beta0_i / tau) for the temperature gate and exp(beta0_i) for the activation gate.

The temperature gate's density depends on (beta1, beta0, tau) only through (beta1, beta0) / tau: the
paper's PDE d u / d tau = -(beta1 . d u / d beta1 + beta0 d u / d beta0) / tau is this flat direction,
along which the likelihood cannot pull an estimate back; the activation gate breaks it.

`fit_mle` maximises the likelihood with `inception_zoo.train.fullbatch.fit` (Adam) for a batch of
independent fits at once (sample sizes x repetitions, their samples concatenated with a fit index, so one
compiled step serves every n). The fits start from given points (the experiment starts them near the truth,
as the authors' earlier EM code does); restarts are extra fits of the batch.
"""
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from inception_zoo.errors import UserError
from inception_zoo.train.fullbatch import fit

GATES = ("temperature", "activation")
# rbar(m) for an over-fitted cell of m atoms (Ho & Nguyen's system of polynomial equations; m = 1 -> 1).
RBAR = (0.0, 1.0, 4.0, 6.0, 8.0, 10.0)

Params = Dict[str, jax.Array]  # beta1 (k, d), beta0 (k,), tau (), a (k, d), b (k,), nu (k,)


def _check_gate(gate: str):
  if gate not in GATES:
    raise UserError(f"unknown gate '{gate}' ({', '.join(GATES)})")


def gate_logits(params: Params, x: jax.Array, gate: str) -> jax.Array:
  """(n, k) logits of the gate's softmax for inputs x (n, d)."""
  _check_gate(gate)
  lin = x @ params["beta1"].T
  if gate == "temperature":
    return (lin + params["beta0"]) / params["tau"]
  return jnp.tanh(lin) / params["tau"] + params["beta0"]


def log_likelihood(params: Params, x: jax.Array, y: jax.Array, gate: str) -> jax.Array:
  """(n,) log p(y | x) of the mixture."""
  log_gate = jax.nn.log_softmax(gate_logits(params, x, gate), axis=-1)
  mean = x @ params["a"].T + params["b"]
  nu = params["nu"]
  log_normal = -0.5 * (jnp.log(2 * jnp.pi * nu) + (y[:, None] - mean) ** 2 / nu)
  return jax.scipy.special.logsumexp(log_gate + log_normal, axis=-1)


def sample(key: jax.Array, params: Params, n: int, gate: str) -> Tuple[jax.Array, jax.Array]:
  """n pairs (x, y) from the mixture, x uniform on [-1, 1]^d."""
  kx, kz, ke = jax.random.split(key, 3)
  x = jax.random.uniform(kx, (n, params["beta1"].shape[1]), minval=-1.0, maxval=1.0)
  z = jax.random.categorical(kz, gate_logits(params, x, gate), axis=-1)
  mean = jnp.sum(x * params["a"][z], axis=-1) + params["b"][z]
  return x, mean + jnp.sqrt(params["nu"][z]) * jax.random.normal(ke, (n,))


def mixing_weights(params: Params, gate: str) -> jax.Array:
  _check_gate(gate)
  return jnp.exp(params["beta0"] / params["tau"]) if gate == "temperature" else jnp.exp(params["beta0"])


def voronoi_loss(params: Params, true: Params, gate: str) -> jax.Array:
  """The Voronoi loss between a fitted mixing measure (k atoms) and the true one (k* atoms); jittable."""
  def dist(p, i):  # per-parameter |difference| of every fitted atom to true atom i: (k, 5)
    return jnp.stack([jnp.linalg.norm(p["beta1"] - true["beta1"][i], axis=-1),
                      jnp.linalg.norm(p["a"] - true["a"][i], axis=-1), jnp.abs(p["b"] - true["b"][i]),
                      jnp.abs(p["nu"] - true["nu"][i]),
                      jnp.broadcast_to(jnp.abs(p["tau"] - true["tau"]), p["b"].shape)], axis=-1)

  k_true = true["b"].shape[0]
  d = jnp.stack([dist(params, i) for i in range(k_true)], axis=1)  # (k, k*, 5)
  cell = jnp.argmin(d[..., :4].sum(-1), axis=1)  # nearest true atom of every fitted atom
  onehot = jax.nn.one_hot(cell, k_true)  # (k, k*)
  counts = onehot.sum(0)
  w, w_true = mixing_weights(params, gate), mixing_weights(true, gate)
  weight_term = jnp.abs(onehot.T @ w - w_true).sum()
  d_own = jnp.take_along_axis(d, cell[:, None, None], axis=1)[:, 0]  # (k, 5)
  r = jnp.asarray(RBAR)[jnp.minimum(counts[cell], len(RBAR) - 1).astype(jnp.int32)]  # (k,)
  # beta1, b, tau at power r; a, nu at r / 2 (an exact-fitted cell: r = 1 for all of them, as in the paper)
  powers = jnp.stack([r, jnp.where(r > 1, r / 2, 1.0), r, jnp.where(r > 1, r / 2, 1.0), r], axis=-1)
  return weight_term + jnp.sum(w * jnp.sum(d_own ** powers, axis=-1))


def _free(params: Params) -> Params:
  """Unconstrained fit parameters: the reference expert's gate is dropped; tau and nu in log space."""
  return {"beta1": params["beta1"][:-1], "beta0": params["beta0"][:-1], "log_tau": jnp.log(params["tau"]),
          "a": params["a"], "b": params["b"], "log_nu": jnp.log(params["nu"])}


def _constrained(free: Params) -> Params:
  d = free["beta1"].shape[-1]
  return {"beta1": jnp.concatenate([free["beta1"], jnp.zeros((1, d))]),
          "beta0": jnp.concatenate([free["beta0"], jnp.zeros((1,))]), "tau": jnp.exp(free["log_tau"]),
          "a": free["a"], "b": free["b"], "nu": jnp.exp(free["log_nu"])}


def _constrained_batch(free: Params) -> Params:
  return jax.vmap(_constrained)(free)


def fit_mle(init: Params, x: jax.Array, y: jax.Array, fit_index: jax.Array, gate: str, *, steps: int,
            lr: float) -> Tuple[Params, jax.Array]:
  """Maximum likelihood for B independent fits at once, their samples concatenated.

  init: parameters with a leading batch axis B; x (P, d), y (P,) the points of all fits, fit_index (P,)
  the fit each point belongs to (each fit maximises its own mean log-likelihood). Returns the fitted
  parameters and each fit's final negative mean log-likelihood (B,).
  """
  _check_gate(gate)
  if x.ndim != 2 or y.shape != x.shape[:1] or fit_index.shape != y.shape:
    raise UserError(f"fit_mle wants x (P, d), y and fit_index (P,); got {x.shape}, {y.shape}, "
                    f"{fit_index.shape}")
  num_fits = init["b"].shape[0]
  counts = jnp.bincount(fit_index, length=num_fits)
  if not bool(jnp.all(counts > 0)):
    raise UserError("fit_mle: every fit needs at least one point")

  def nll(free):
    per_point = jax.tree.map(lambda v: v[fit_index], _constrained_batch(free))
    ll = jax.vmap(lambda p, xi, yi: log_likelihood(p, xi[None], yi[None], gate)[0])(per_point, x, y)
    per_fit = -jax.ops.segment_sum(ll, fit_index, num_fits) / counts
    return jnp.sum(per_fit), per_fit  # the fits are independent: the sum's gradient is each one's own

  tx = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.01))
  free, _ = fit(lambda p, _: nll(p)[0], jax.vmap(_free)(init), tx, steps, log_every=steps)
  return _constrained_batch(free), nll(free)[1]

