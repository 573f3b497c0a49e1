"""Weight-sharing elastic supernet of SimQ-NAS's CPU setting, trained with the sandwich rule.

Sridhar, Szankin, Chen, Sundaresan, Sarah, "SimQ-NAS: Simultaneous Quantization Policy and Neural
Architecture Search", arXiv:2312.13301, 2023. The paper searches OFA-style supernets (Cai et al.,
"Once-for-All", ICLR 2020: elastic depth per stage, width and expansion ratios, subnets are slices of
the shared weights); this is the same search space on an MLP: stages of residual blocks
x + fc2(relu(fc1(x))), each stage entered by a projection to its width.

- Elastic width: a stage of width w keeps the first w units of every layer in it; expansion e: a block's
  hidden layer keeps its first e x w units; elastic depth: a stage runs its first d blocks. Subnets are
  selected with 0/1 masks on the kernels (the first k rows / columns, as OFA slices them), so ONE compiled
  network and train step serve every subnet; `subnet_layers` gives the same subnet as dense sliced weights.
- Sandwich rule (Yu & Huang, "Universally Slimmable Networks", ICCV 2019, as used by BigNAS / OFA's
  joint stage): every step trains the largest subnet on the labels, and the smallest plus `num_random`
  random subnets on the largest one's soft predictions (in-place distillation), gradients summed.
- Every layer takes a per-layer quantisation policy (`quant.policy`): bits and a calibrated input range.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from inception_zoo.errors import UserError
from inception_zoo.quant import policy

Arch = Dict[str, jax.Array]  # {"depth": (stages,), "width": (stages,), "expand": (stages, max_depth)}


class ElasticDense(nn.Module):
  """Dense layer of the largest shape; the masks pick the active slice, `bits` / `act_range` its policy."""
  features: int

  @nn.compact
  def __call__(self, x, in_mask, out_mask, bits, act_range):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    self.sow("intermediates", "input_range", jnp.stack([jnp.min(x), jnp.max(x)]))  # PTQ calibration
    # Masking the kernel (not only the output) keeps the per-channel weight scales those of the slice.
    kernel = kernel * (in_mask[:, None] * out_mask[None, :])
    x, kernel = policy.fake_quantize(x, kernel, bits, act_range)
    return x @ kernel + bias * out_mask


class ElasticMLP(nn.Module):
  """Stages of residual MLP blocks with elastic depth, width and expansion (see the module docstring)."""
  widths: Sequence[int] = (32, 48, 64)
  expansions: Sequence[int] = (1, 2, 3)
  stages: int = 2
  max_depth: int = 2
  num_classes: int = 10

  def layer_names(self) -> List[str]:
    names = []
    for s in range(self.stages):
      names.append(f"stage{s}_proj")
      for b in range(self.max_depth):
        names += [f"stage{s}_block{b}_fc1", f"stage{s}_block{b}_fc2"]
    return names + ["head"]

  @nn.compact
  def __call__(self, x, arch: Arch, bits=None, ranges=None):
    """Logits of the subnet `arch`; `bits` (layers,) and `ranges` (layers, 2) quantise it (None: FP32)."""
    num_layers = len(self.layer_names())
    bits = jnp.full((num_layers,), policy.FULL) if bits is None else bits
    ranges = jnp.zeros((num_layers, 2)) if ranges is None else ranges
    wmax, hmax = max(self.widths), max(self.widths) * max(self.expansions)
    layer = iter(range(num_layers))

    def dense(features, name, x, in_mask, out_mask):
      i = next(layer)
      return ElasticDense(features, name=name)(x, in_mask, out_mask, bits[i], ranges[i])

    in_mask = jnp.ones((x.shape[-1],))
    for s in range(self.stages):
      w_mask = (jnp.arange(wmax) < arch["width"][s]).astype(x.dtype)
      x = nn.relu(dense(wmax, f"stage{s}_proj", x, in_mask, w_mask))
      for b in range(self.max_depth):
        h_mask = (jnp.arange(hmax) < arch["expand"][s, b] * arch["width"][s]).astype(x.dtype)
        h = nn.relu(dense(hmax, f"stage{s}_block{b}_fc1", x, w_mask, h_mask))
        h = dense(wmax, f"stage{s}_block{b}_fc2", h, h_mask, w_mask)
        x = x + jnp.where(b < arch["depth"][s], h, 0.0)  # blocks past the stage's depth are skipped
      in_mask = w_mask
    return dense(self.num_classes, "head", x, in_mask, jnp.ones((self.num_classes,)))


def check_arch(net: ElasticMLP, arch: Arch):
  """One-line error for a depth, width or expansion outside the supernet's choices."""
  arch = {k: np.asarray(v) for k, v in arch.items()}
  for key, allowed in (("depth", range(1, net.max_depth + 1)), ("width", net.widths), ("expand", net.expansions)):
    bad = np.setdiff1d(arch[key], list(allowed))
    if bad.size:
      raise UserError(f"{key} {bad[0]} is not in the search space {list(allowed)}")


def extreme_arch(net: ElasticMLP, largest: bool) -> Arch:
  pick = max if largest else min
  return {"depth": jnp.full((net.stages,), net.max_depth if largest else 1),
          "width": jnp.full((net.stages,), pick(net.widths)),
          "expand": jnp.full((net.stages, net.max_depth), pick(net.expansions))}


def sample_arch(net: ElasticMLP, key) -> Arch:
  """A subnet drawn uniformly per choice (depth per stage, width per stage, expansion per block)."""
  k1, k2, k3 = jax.random.split(key, 3)
  return {"depth": jax.random.randint(k1, (net.stages,), 1, net.max_depth + 1),
          "width": jnp.asarray(net.widths)[jax.random.randint(k2, (net.stages,), 0, len(net.widths))],
          "expand": jnp.asarray(net.expansions)[jax.random.randint(k3, (net.stages, net.max_depth), 0,
                                                                   len(net.expansions))]}


def layer_shapes(net: ElasticMLP, arch, in_features: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(fan_in, fan_out, active) of every layer of the subnets `arch` (numpy, any leading batch shape)."""
  depth, width, expand = (np.asarray(arch[k]) for k in ("depth", "width", "expand"))
  layers = []  # (fan_in, fan_out, active) per layer
  previous = np.full(width.shape[:-1], in_features)
  for s in range(net.stages):
    w = width[..., s]
    layers.append((previous, w, np.ones_like(w, bool)))
    for b in range(net.max_depth):
      hidden, on = expand[..., s, b] * w, b < depth[..., s]
      layers += [(w, hidden, on), (hidden, w, on)]
    previous = w
  layers.append((previous, np.full_like(previous, net.num_classes), np.ones_like(previous, bool)))
  return tuple(np.stack(a, -1) for a in zip(*layers))


def sandwich_loss(net: ElasticMLP, params, x, y, key, num_random: int = 2):
  """CE of the largest subnet plus in-place distillation of the smallest and `num_random` random ones."""
  archs = [extreme_arch(net, True), extreme_arch(net, False)]
  archs += [sample_arch(net, k) for k in jax.random.split(key, num_random)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *archs)
  logits = jax.vmap(lambda a: net.apply({"params": params}, x, a))(stacked)
  teacher = jax.nn.softmax(jax.lax.stop_gradient(logits[0]))
  ce = optax.softmax_cross_entropy_with_integer_labels(logits[0], y).mean()
  distill = optax.softmax_cross_entropy(logits[1:], teacher[None]).mean(-1).sum()
  return ce + distill, {"largest_ce": ce}


def calibrate(net: ElasticMLP, params, arch: Arch, x_cal) -> jax.Array:
  """(layers, 2) input ranges of the subnet's layers from its full-precision run on the calibration data."""
  _, state = net.apply({"params": params}, x_cal, arch, mutable=["intermediates"])
  return policy.calibrated_ranges(state["intermediates"], net.layer_names())


def subnet_layers(net: ElasticMLP, params, arch) -> Dict[str, Tuple[jax.Array, jax.Array]]:
  """The subnet's active layers as dense weights: {name: (kernel slice, bias slice)}."""
  check_arch(net, arch)
  fan_in, fan_out, active = layer_shapes(net, arch, params[net.layer_names()[0]]["kernel"].shape[0])
  return {name: (params[name]["kernel"][:i, :o], params[name]["bias"][:o])
          for name, i, o, on in zip(net.layer_names(), fan_in, fan_out, active) if on}


def dense_forward(net: ElasticMLP, layers, arch, x, bits: Optional[Dict[str, int]] = None,
                  ranges: Optional[Dict[str, jax.Array]] = None, integer: bool = False):
  """The subnet as a plain network of its sliced weights (`subnet_layers`): the deployed form, whose
  shapes are the subnet's own. `bits` / `ranges` per layer name quantise it: fake quantisation, or with
  `integer` the int8 kernels of `policy.integer_dense` (then `layers` holds `policy.pack_weight` codes
  for the quantised layers)."""
  depth = np.asarray(arch["depth"])

  def dense(name, x):
    b = policy.FULL if bits is None else bits[name]
    kernel, bias = layers[name]
    if b >= policy.FULL:
      return x @ kernel + bias
    if integer:
      return policy.integer_dense(x, kernel, bias, b, ranges[name])
    xq, kq = policy.fake_quantize(x, kernel, b, ranges[name])
    return xq @ kq + bias

  for s in range(net.stages):
    x = nn.relu(dense(f"stage{s}_proj", x))
    for b in range(int(depth[s])):
      x = x + dense(f"stage{s}_block{b}_fc2", nn.relu(dense(f"stage{s}_block{b}_fc1", x)))
  return dense("head", x)
