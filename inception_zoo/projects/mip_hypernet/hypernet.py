"""Hypernetworks with magnitude invariant parametrizations (MIP): Ortiz, Guttag, Dalca, "Magnitude
Invariant Parametrizations Improve Hypernetwork Learning", ICLR 2024; paper 10 of the zoo.

A hypernetwork h maps a conditioning vector gamma in [0, 1]^k to the parameters theta(gamma) of a
primary network, which then runs with them. The paper traces slow, unstable hypernetwork training to
the magnitude of gamma: at initialisation the scale of h(gamma) - hence of the primary network's
weights and activations - is proportional to |gamma|. MIP fixes it with two changes:
  * input encoding: gamma -> [cos(pi gamma / 2), sin(pi gamma / 2)], of constant norm;
  * additive output: theta(gamma) = theta_0 + h(gamma), with theta_0 independent of gamma,
    initialised like the primary network (the authors' `hyperlight` stores it as the bias of h's
    output layer, which is what `HyperNet` does too).
`HyperNet(encoding=None, additive=False)` is the baseline: raw gamma in, theta = h(gamma) out (the
output bias starts at zero).

The initialisation follows `hyperlight` (checked against it in tests/papers/test_hypernet.py): Kaiming-normal
hidden layers with fan-out scaling for the leaky-ReLU gain, the output layer initialised block by block
(each primary tensor's rows as an independent layer, bias blocks at zero).
"""
import itertools
import math
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_zoo.errors import UserError

ENCODINGS = (None, "cos|sin")
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default, hyperlight's nonlinearity
LEAKY_GAIN = math.sqrt(2.0 / (1 + LEAKY_SLOPE ** 2))


def encode(gamma: jax.Array, encoding: Optional[str]) -> jax.Array:
  """MIP's input encoding: each gamma_i in [0, 1] becomes (cos(pi gamma_i / 2), sin(pi gamma_i / 2))."""
  if encoding is None:
    return gamma
  z = jnp.pi * gamma / 2
  return jnp.concatenate([jnp.cos(z), jnp.sin(z)], axis=-1)


def _fan_out_normal(key, shape, dtype=jnp.float32):
  # Kaiming normal, mode fan_out: a hypernetwork's last layer has thousands of outputs per input unit,
  # and fan-in scaling would make theta's scale depend on how many parameters the primary net has.
  return jax.random.normal(key, shape, dtype) * LEAKY_GAIN / math.sqrt(shape[-1])


class HyperNet(nn.Module):
  """Emits the `params` of `primary` (any Flax module without other variable collections) from gamma.

  `__call__(gamma)` with gamma of shape (k,) returns the primary's params tree; `primary_apply(gamma,
  *args)` runs the primary with them. `hidden`: the MLP's widths (leaky-ReLU between them).
  """
  primary: nn.Module
  primary_input: Tuple[int, ...]  # one input example's shape, to trace the primary's parameters
  hidden: Sequence[int] = (16, 64)
  encoding: Optional[str] = "cos|sin"
  additive: bool = True

  def template(self):
    """The primary's parameter shapes, traced (nothing is computed)."""
    variables = jax.eval_shape(self.primary.init, jax.random.key(0), jnp.zeros((1, *self.primary_input)))
    extra = sorted(set(variables) - {"params"})
    if extra:
      raise UserError(f"a hypernetwork emits only 'params'; the primary network also has {extra} "
                      f"(use a primary without batch norm)")
    return variables["params"]

  @nn.compact
  def __call__(self, gamma: jax.Array):
    if self.encoding not in ENCODINGS:
      raise UserError(f"unknown hypernetwork encoding '{self.encoding}' (one of {ENCODINGS})")
    template = self.template()
    leaves, treedef = jax.tree.flatten(template)
    paths = leaf_names(template)
    sizes = [math.prod(leaf.shape) for leaf in leaves]
    h = encode(gamma, self.encoding)
    for i, width in enumerate(self.hidden):
      h = nn.leaky_relu(nn.Dense(width, kernel_init=_fan_out_normal, name=f"fc{i}")(h), LEAKY_SLOPE)

    def output_kernel(key, shape, dtype=jnp.float32):  # (hidden, total): one independently initialised block per tensor
      keys = jax.random.split(key, len(sizes))
      blocks = [jnp.zeros((shape[0], n)) if path.endswith(".bias") else _fan_out_normal(k, (shape[0], n))
                for k, n, path in zip(keys, sizes, paths)]
      return jnp.concatenate(blocks, axis=1)

    def theta_0(key, shape, dtype=jnp.float32):  # the primary network's own initialisation, flattened
      params = self.primary.init(key, jnp.zeros((1, *self.primary_input)))["params"]
      return jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(params)])

    flat = nn.Dense(sum(sizes), kernel_init=output_kernel,
                    bias_init=theta_0 if self.additive else nn.initializers.zeros, name="out")(h)
    splits = jnp.split(flat, list(itertools.accumulate(sizes))[:-1], axis=-1)
    return jax.tree.unflatten(treedef, [s.reshape(*gamma.shape[:-1], *leaf.shape)
                                        for s, leaf in zip(splits, leaves)])

  def primary_apply(self, gamma: jax.Array, *args, **kwargs):
    return self.primary.apply({"params": self(gamma)}, *args, **kwargs)


def leaf_names(params) -> list:
  """Dotted paths of the leaves in tree order ("fc.kernel", "fc.bias"), as hyperlight names outputs."""
  return [".".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def parameter_norm(params: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(params)))
