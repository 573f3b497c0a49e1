"""Function-preserving network transformations (Net2Wider, Net2Deeper) on plain CNNs and DenseNets,
the actions of EAS (paper 11 of the zoo).

Cai, Chen, Zhang, Yu, Wang, "Efficient Architecture Search by Network Transformation", AAAI 2018
(arXiv:1707.04873), Sec. 3 and 4; the transformations are Net2Net's (Chen, Goodfellow, Shlens, ICLR 2016).
Facts from the authors' code (han-cai/EAS, `code/arch_search/*_net2net.py`, `code/models/layers.py`).

An architecture is an `Arch`: blocks of layers, each layer `(width, kernel)`.
- plain: conv(no bias) -> BatchNorm -> ReLU per layer, 2x2 max-pool between blocks, then global
  average pooling and a dense classifier (the authors' space has no skip connections either; their
  FC layers before the classifier are left out here).
- dense: a 3x3 stem conv, dense blocks whose layers are BN -> ReLU -> conv with `width` = growth rate
  and whose outputs are concatenated to their input, a BN -> ReLU -> 1x1 conv -> 2x2 average-pool
  transition between blocks, then BN -> ReLU -> global average pool -> classifier. The authors' layers
  are bottleneck (BC) layers; ours have one conv (our simplification).

Net2Wider(layer, new width): output unit j of the new layer copies unit g(j) of the old one (g(j) = j
for the old units, uniform random for the new ones); its BatchNorm parameters and statistics are
copied with it, and every consumer divides its incoming weights from unit g(j) by the replication
count |{j': g(j') = g(j)}|. In a DenseNet the widened layer's channels sit at an offset inside the
concatenated input of every later layer of its block, of the transition and of the final BN: each of
those consumers maps its input channels (and its pre-activation BatchNorm) through g at that offset.

Net2Deeper(after layer i): plain: a conv initialised to the identity (centre tap = eye) of the same
width, followed by a BatchNorm set to undo its own normalisation, (x - m) / sqrt(v + eps) *
sqrt(v + eps) + m = x, and a ReLU, which is the identity on the non-negative output of layer i's ReLU.
With m, v the statistics of layer i's output on the training batch (`calibrate`; the authors'
`set_identity4deepen` also measures them on data) the new layer is the identity in training mode on
that batch as well as in evaluation; without them m = 0, v = 1 - eps, exact in evaluation only.
dense: a new dense layer inserted after layer i of the block (the authors' `insert_miniblock`); its
conv is He-initialised and every later consumer gets zero weights (and an identity pre-activation
BatchNorm) on its new channels, so the output is unchanged (our reading of how the concatenation is
kept function-preserving). `noise` (off by default) perturbs the new weights as Net2Net does to break
the symmetry of replicated units; the authors use relative normal noise 1e-2 (wider) and 1e-3 (deeper).

Parameter counts (in_channels C, classes K, a layer (w, k) with c_in input channels):
  plain: sum over layers of k^2 c_in w + 2w (BN scale, bias), + (w_last + 1) K for the head;
  dense: 9 C s for the stem of width s; per dense layer 2 c_in + k^2 c_in w; per transition to t
  channels 2 c_in + c_in t; the final BN 2 c + the head (c + 1) K. `num_params` computes these.
"""
import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo.errors import UserError

BN_EPS = 1e-5
KINDS = ("plain", "dense")
Layer = Tuple[int, int]  # (filters or growth rate, kernel size)


@dataclasses.dataclass(frozen=True)
class Arch:
  """`blocks[b][i] = (width, kernel)`; `stem` and `transitions` (output channels of the 1x1 conv
  after every block but the last) are the DenseNet's."""
  kind: str
  blocks: Tuple[Tuple[Layer, ...], ...]
  stem: int = 0
  transitions: Tuple[int, ...] = ()

  def __post_init__(self):
    if self.kind not in KINDS:
      raise UserError(f"unknown architecture kind '{self.kind}' ({', '.join(KINDS)})")
    if not self.blocks or any(not block for block in self.blocks):
      raise UserError(f"every block needs at least one layer; got {self.blocks}")
    if any(k % 2 == 0 for block in self.blocks for _, k in block):
      raise UserError(f"kernel sizes must be odd (an identity conv needs a centre tap); got {self.blocks}")
    if self.kind == "dense" and (self.stem < 1 or len(self.transitions) != len(self.blocks) - 1):
      raise UserError(f"a DenseNet needs a stem width and {len(self.blocks) - 1} transition widths; "
                      f"got stem {self.stem}, transitions {self.transitions}")

  def replace_layers(self, block: int, layers: Tuple[Layer, ...]) -> "Arch":
    blocks = list(self.blocks)
    blocks[block] = tuple(layers)
    return dataclasses.replace(self, blocks=tuple(blocks))

  def describe(self) -> str:
    body = " | ".join(" ".join(f"{w}k{k}" for w, k in block) for block in self.blocks)
    return f"{self.kind}[{body}]"


class Net(nn.Module):
  """The network of an `Arch`; sows every plain layer's output as `intermediates/out{b}_{i}`."""
  arch: Arch
  num_classes: int
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                   epsilon=BN_EPS, name=name)
    conv = lambda w, k, name: nn.Conv(w, (k, k), padding="SAME", use_bias=False, name=name)
    a = self.arch
    if a.kind == "dense":
      x = conv(a.stem, 3, "stem")(x)
    for b, block in enumerate(a.blocks):
      if b and a.kind == "plain":
        x = nn.max_pool(x, (2, 2), (2, 2))
      elif b:
        x = nn.relu(bn(f"trans_bn{b - 1}")(x))
        x = nn.avg_pool(conv(a.transitions[b - 1], 1, f"trans{b - 1}")(x), (2, 2), (2, 2))
      for i, (w, k) in enumerate(block):
        if a.kind == "plain":
          x = nn.relu(bn(f"bn{b}_{i}")(conv(w, k, f"conv{b}_{i}")(x)))
          self.sow("intermediates", f"out{b}_{i}", x)
        else:
          x = jnp.concatenate([x, conv(w, k, f"conv{b}_{i}")(nn.relu(bn(f"bn{b}_{i}")(x)))], -1)
    if a.kind == "dense":
      x = nn.relu(bn("final_bn")(x))
    return nn.Dense(self.num_classes, name="head")(x.mean((1, 2)))


def _consumers(arch: Arch) -> List[Tuple[str, Optional[str], List[Tuple[str, int]]]]:
  """Every conv / dense kernel that reads produced channels: (kernel name, its pre-activation BN or
  None, the layout of its input as (producer, width) segments in channel order)."""
  out = []
  if arch.kind == "plain":
    names = [(f"conv{b}_{i}", w) for b, block in enumerate(arch.blocks) for i, (w, _) in enumerate(block)]
    for (producer, w), (consumer, _) in zip(names, names[1:] + [("head", 0)]):
      out.append((consumer, None, [(producer, w)]))
    return out
  layout = [("stem", arch.stem)]
  for b, block in enumerate(arch.blocks):
    if b:
      out.append((f"trans{b - 1}", f"trans_bn{b - 1}", list(layout)))
      layout = [(f"trans{b - 1}", arch.transitions[b - 1])]
    for i, (w, _) in enumerate(block):
      out.append((f"conv{b}_{i}", f"bn{b}_{i}", list(layout)))
      layout.append((f"conv{b}_{i}", w))
  out.append(("head", "final_bn", layout))
  return out


def _np(variables) -> Dict[str, Dict[str, Dict[str, np.ndarray]]]:
  return jax.tree.map(lambda v: np.array(v, np.float32), {k: dict(variables[k]) for k in ("params", "batch_stats")})


def _jnp(variables):
  return jax.tree.map(jnp.asarray, variables)


def _check_layer(arch: Arch, block: int, layer: int):
  if not (0 <= block < len(arch.blocks) and 0 <= layer < len(arch.blocks[block])):
    raise UserError(f"no layer {layer} in block {block} of {arch.describe()}")


def _map_inputs(v, consumer: str, pre_bn: Optional[str], index: np.ndarray, scale: np.ndarray,
                fill: Optional[np.ndarray] = None):
  """Re-indexes a consumer's input channels: kernel rows `index` divided by `scale`, rows where `fill`
  is set become zeros (a new channel), and its pre-activation BN follows the same index (identity on
  new channels)."""
  p = v["params"]
  kernel = np.take(p[consumer]["kernel"], index, axis=-2) / scale[:, None]
  if fill is not None:
    kernel[..., fill, :] = 0.0
  p[consumer] = {**p[consumer], "kernel": kernel}
  if pre_bn is not None:
    for col, name, default in (("params", "scale", 1.0), ("params", "bias", 0.0),
                               ("batch_stats", "mean", 0.0), ("batch_stats", "var", 1.0)):
      value = np.take(v[col][pre_bn][name], index)
      if fill is not None:
        value[fill] = default
      v[col][pre_bn] = {**v[col][pre_bn], name: value}


def widen(arch: Arch, variables, block: int, layer: int, width: int, rng: np.random.Generator, *,
          noise: float = 0.0) -> Tuple[Arch, Any]:
  """Net2Wider: layer `layer` of block `block` to `width` output channels (the growth rate of a dense
  layer); returns the new (arch, variables) computing the same function (up to `noise`). The random
  choices are numpy's (`rng`): jax ops of a new shape on every call would each compile."""
  _check_layer(arch, block, layer)
  old, kernel_size = arch.blocks[block][layer]
  if width < old:
    raise UserError(f"Net2Wider cannot shrink layer {block}.{layer} from {old} to {width} channels")
  g = np.concatenate([np.arange(old), rng.integers(0, old, width - old)])
  counts = np.bincount(g, minlength=old).astype(np.float32)
  v = _np(variables)
  name = f"conv{block}_{layer}"
  kernel = v["params"][name]["kernel"][..., g]
  if noise and width > old:
    kernel[..., old:] += noise * np.std(kernel) * rng.standard_normal(kernel[..., old:].shape)
  v["params"][name] = {"kernel": kernel}
  if arch.kind == "plain":  # the layer's own post-conv BN follows its channels
    bn = f"bn{block}_{layer}"
    v["params"][bn] = {k: a[g] for k, a in v["params"][bn].items()}
    v["batch_stats"][bn] = {k: a[g] for k, a in v["batch_stats"][bn].items()}
  for consumer, pre_bn, layout in _consumers(arch):
    offsets = np.cumsum([0] + [w for _, w in layout])
    index, scale = [], []
    for (producer, w), start in zip(layout, offsets):
      if producer == name:
        index.append(start + g)
        scale.append(counts[g])
      else:
        index.append(start + np.arange(w))
        scale.append(np.ones(w, np.float32))
    if any(producer == name for producer, _ in layout):
      _map_inputs(v, consumer, pre_bn, np.concatenate(index), np.concatenate(scale))
  layers = list(arch.blocks[block])
  layers[layer] = (width, kernel_size)
  return arch.replace_layers(block, tuple(layers)), _jnp(v)


def _shift_names(v, block: int, first: int, count: int, prefixes=("conv", "bn")):
  """Renames layers `first..count-1` of `block` to the next index (highest first), making room."""
  for i in reversed(range(first, count)):
    for prefix in prefixes:
      for col in ("params", "batch_stats"):
        if f"{prefix}{block}_{i}" in v[col]:
          v[col][f"{prefix}{block}_{i + 1}"] = v[col].pop(f"{prefix}{block}_{i}")


def deepen(arch: Arch, variables, block: int, after: int, kernel: int, rng: np.random.Generator, *,
           stats: Optional[Tuple[np.ndarray, np.ndarray]] = None, width: Optional[int] = None,
           noise: float = 0.0) -> Tuple[Arch, Any]:
  """Net2Deeper: a new layer with a `kernel` x `kernel` conv right after layer `after` of `block`.
  plain: identity-initialised, as wide as layer `after`; `stats` = (mean, var) of layer `after`'s
  output (`calibrate`) makes it the identity in training mode too. dense: `width` new channels
  (default: layer `after`'s growth rate), zero weights in every consumer."""
  _check_layer(arch, block, after)
  if kernel % 2 == 0:
    raise UserError(f"Net2Deeper needs an odd kernel size (a centre tap for the identity); got {kernel}")
  v = _np(variables)
  layers = list(arch.blocks[block])
  _shift_names(v, block, after + 1, len(layers))
  new = f"conv{block}_{after + 1}"
  if arch.kind == "plain":
    w = layers[after][0]
    eye = np.zeros((kernel, kernel, w, w), np.float32)
    eye[kernel // 2, kernel // 2] = np.eye(w, dtype=np.float32)
    if noise:
      eye += noise * rng.standard_normal(eye.shape)
    mean, var = stats if stats is not None else (np.zeros(w, np.float32), np.full(w, 1.0 - BN_EPS, np.float32))
    v["params"][new] = {"kernel": eye}
    v["params"][f"bn{block}_{after + 1}"] = {"scale": np.sqrt(np.asarray(var) + BN_EPS), "bias": np.asarray(mean)}
    v["batch_stats"][f"bn{block}_{after + 1}"] = {"mean": np.asarray(mean), "var": np.asarray(var)}
    layers.insert(after + 1, (w, kernel))
    return arch.replace_layers(block, tuple(layers)), _jnp(v)
  w = layers[after][0] if width is None else width
  new_arch = arch.replace_layers(block, tuple(layers[:after + 1] + [(w, kernel)] + layers[after + 1:]))
  layout = dict((c, lay) for c, _, lay in _consumers(new_arch))[new]
  c_in = sum(n for _, n in layout)
  he = np.sqrt(2.0 / (kernel * kernel * c_in))
  v["params"][new] = {"kernel": (he * rng.standard_normal((kernel, kernel, c_in, w))).astype(np.float32)}
  v["params"][f"bn{block}_{after + 1}"] = {"scale": np.ones(c_in, np.float32), "bias": np.zeros(c_in, np.float32)}
  v["batch_stats"][f"bn{block}_{after + 1}"] = {"mean": np.zeros(c_in, np.float32),
                                                "var": np.ones(c_in, np.float32)}
  for consumer, pre_bn, layout in _consumers(new_arch):
    if consumer == new or all(producer != new for producer, _ in layout):
      continue
    old_index, fill, old_pos = [], [], 0
    for producer, n in layout:  # the new channels take no old row; the others keep their order
      is_new = producer == new
      old_index.append(np.zeros(n, int) if is_new else old_pos + np.arange(n))
      fill.append(np.full(n, is_new))
      old_pos += 0 if is_new else n
    index = np.concatenate(old_index)
    _map_inputs(v, consumer, pre_bn, index, np.ones(len(index), np.float32), fill=np.concatenate(fill))
  return new_arch, _jnp(v)


def calibrate(arch: Arch, variables, x, num_classes: int):
  """The variables with BatchNorm statistics equal to those of the batch `x` (exact, not a moving
  average), and per plain layer (block, index) the mean and variance of its output on `x`: the
  statistics `deepen` needs for a new layer after it. Traceable under jit."""
  _, state = Net(arch, num_classes, bn_momentum=0.0).apply(variables, x, train=True,
                                                           mutable=["batch_stats", "intermediates"])
  stats = {}
  for name, (a,) in state.get("intermediates", {}).items():
    b, i = map(int, name[len("out"):].split("_"))
    stats[(b, i)] = (a.mean((0, 1, 2)), a.var((0, 1, 2)))
  return {"params": variables["params"], "batch_stats": state["batch_stats"]}, stats


def num_params(arch: Arch, in_channels: int, num_classes: int) -> int:
  """The trainable parameter count, in closed form (see the module docstring)."""
  total, c = 0, in_channels
  if arch.kind == "dense":
    total, c = 9 * in_channels * arch.stem, arch.stem
  for b, block in enumerate(arch.blocks):
    if b and arch.kind == "dense":
      total += 2 * c + c * arch.transitions[b - 1]
      c = arch.transitions[b - 1]
    for w, k in block:
      if arch.kind == "plain":
        total, c = total + k * k * c * w + 2 * w, w
      else:
        total, c = total + 2 * c + k * k * c * w, c + w
  if arch.kind == "dense":
    total += 2 * c
  return total + (c + 1) * num_classes
