"""Weight-sharing elastic supernets of SimQ-NAS, trained with the sandwich rule.

Sridhar, Szankin, Chen, Sundaresan, Sarah, "SimQ-NAS: Simultaneous Quantization Policy and Neural
Architecture Search", arXiv:2312.13301, 2023. The paper searches OFA-style supernets (Cai et al.,
"Once-for-All", ICLR 2020: elastic depth per stage, width and expansion ratios, subnets are slices of
the shared weights). `ElasticMLP` (the CPU setting) is that space on an MLP: stages of residual blocks
x + fc2(relu(fc1(x))), each stage entered by a projection to its width. `ElasticResNet` (the full
setting) is it on ResNet-50's bottlenecks, built as Intel's BootstrapNAS builds its ResNet-50 supernet:
the largest subnet IS torchvision's / timm's ResNet-50 (7x7 stem, 3/4/6/3 bottlenecks, 1x1 projection
shortcuts, 25,557,032 parameters), with the zoo ResNet's parameter names, so `init_from` a converted
timm `resnet50` starts the supernet from its weights. OFA's choice lists, anchored at that network
(our reading): a stage runs base + {0, 1, 2} blocks (base 1/2/4/1), the stem and each stage keep
x{0.65, 0.8, 1.0} of their widths (rounded to multiples of 8 as OFA's `make_divisible`), and each
bottleneck's inner width is {0.15, 0.2, 0.25} x its output width (0.25 is ResNet-50's; OFA's own
`ofa_resnet50` has a deep stem, average-pool shortcuts and ratios up to 0.35, so its largest subnet
is not ResNet-50). Arch genes of `ElasticResNet` are indices into those lists.

- Elastic width: a stage of width w keeps the first w units of every layer in it; expansion e: a block's
  hidden layer keeps its first e x w units; elastic depth: a stage runs its first d blocks. Subnets are
  selected with 0/1 masks on the kernels (the first k rows / columns, as OFA slices them), so ONE compiled
  network and train step serve every subnet; `subnet_layers` / `subnet_variables` give the same subnet as
  sliced weights of its own smaller network. Batch norms act per channel, so a masked BN is the sliced
  one once its output is masked; a subnet's BN statistics are recalibrated on a few training images
  before it is scored (OFA's `set_running_statistics`), together with the PTQ input ranges.
- Sandwich rule (Yu & Huang, "Universally Slimmable Networks", ICCV 2019, as used by BigNAS / OFA's
  joint stage): every step trains the largest subnet on the labels, and the smallest plus `num_random`
  random subnets on the largest one's soft predictions (in-place distillation), gradients summed.
- Every layer takes a per-layer quantisation policy (`quant.policy`): bits and a calibrated input range.
"""
import functools
from typing import Any, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from inception_zoo.errors import UserError
from inception_zoo.layers.common import conv_init
from inception_zoo.models import resnet
from inception_zoo.models.mobilenet import make_divisible
from inception_zoo.quant import policy

# {"depth": (stages,), "width": (stages,), "expand": (stages, max_depth)} for ElasticMLP (values);
# {"depth": (4,), "width": (5,), "expand": (blocks,)} for ElasticResNet (indices into its choice lists).
Arch = Dict[str, jax.Array]


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

  def arch_space(self) -> Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]]:
    """{gene: (shape, allowed values)}."""
    return {"depth": ((self.stages,), tuple(range(1, self.max_depth + 1))),
            "width": ((self.stages,), tuple(self.widths)),
            "expand": ((self.stages, self.max_depth), tuple(self.expansions))}

  def layer_shapes(self, arch, in_features: int):
    """(fan_in, fan_out, active, positions) of every layer of the subnets `arch` (numpy, any leading
    batch shape); a dense layer sees one position per example."""
    depth, width, expand = (np.asarray(arch[k]) for k in ("depth", "width", "expand"))
    layers = []  # (fan_in, fan_out, active) per layer
    previous = np.full(width.shape[:-1], in_features)
    for s in range(self.stages):
      w = width[..., s]
      layers.append((previous, w, np.ones_like(w, bool)))
      for b in range(self.max_depth):
        hidden, on = expand[..., s, b] * w, b < depth[..., s]
        layers += [(w, hidden, on), (hidden, w, on)]
      previous = w
    layers.append((previous, np.full_like(previous, self.num_classes), np.ones_like(previous, bool)))
    fan_in, fan_out, active = (np.stack(a, -1) for a in zip(*layers))
    return fan_in, fan_out, active, np.ones_like(fan_in)

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


def check_arch(net, arch: Arch):
  """One-line error for a gene outside the supernet's choices."""
  for key, (_, allowed) in net.arch_space().items():
    bad = np.setdiff1d(np.asarray(arch[key]), list(allowed))
    if bad.size:
      raise UserError(f"{key} {bad[0]} is not in the search space {list(allowed)}")


def extreme_arch(net, largest: bool) -> Arch:
  pick = max if largest else min
  return {k: jnp.full(shape, pick(values)) for k, (shape, values) in net.arch_space().items()}


def sample_arch(net, key) -> Arch:
  """A subnet drawn uniformly per choice (depth per stage, width per stage, expansion per block)."""
  space = net.arch_space()
  return {k: jnp.asarray(values)[jax.random.randint(kk, shape, 0, len(values))]
          for kk, (k, (shape, values)) in zip(jax.random.split(key, len(space)), space.items())}


def layer_shapes(net, arch, input_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(fan_in, fan_out, active, positions) of every layer of the subnets `arch` (numpy, any leading batch
  shape): a convolution's fan_in counts its taps (k x k x input channels), positions are its output
  pixels per example; `input_size` is the MLP's input features or the image's side."""
  return net.layer_shapes(arch, input_size)


def sandwich_archs(net, key, num_random: int) -> List[Arch]:
  """The sandwich rule's subnets of one step: largest, smallest, `num_random` random ones."""
  return [extreme_arch(net, True), extreme_arch(net, False)] + [sample_arch(net, k)
                                                                for k in jax.random.split(key, num_random)]


def sandwich_objective(largest_logits, other_logits: Sequence[jax.Array], y):
  """CE of the largest subnet on the labels plus the others' CE on its soft predictions (in-place
  distillation, no gradient through the teacher)."""
  teacher = jax.nn.softmax(jax.lax.stop_gradient(largest_logits))
  ce = optax.softmax_cross_entropy_with_integer_labels(largest_logits, y).mean()
  return ce + sum(optax.softmax_cross_entropy(o, teacher).mean() for o in other_logits), ce


def sandwich_loss(net: ElasticMLP, params, x, y, key, num_random: int = 2):
  """The MLP's sandwich step: its subnets in one vmapped call (no batch statistics to keep)."""
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *sandwich_archs(net, key, num_random))
  logits = jax.vmap(lambda a: net.apply({"params": params}, x, a))(stacked)
  loss, ce = sandwich_objective(logits[0], list(logits[1:]), y)
  return loss, {"largest_ce": ce}


def calibrate(net, variables, arch: Arch, x_cal) -> Dict[str, Any]:
  """The subnet's post-training calibration from its full-precision run on `x_cal`: "ranges" (layers, 2)
  of every layer's input and, for a network with batch norms, "batch_stats" set to the statistics of
  `x_cal` (a train-mode pass with momentum 0: the ranges then see the recalibrated network)."""
  if "batch_stats" not in variables:
    _, state = net.apply(variables, x_cal, arch, mutable=["intermediates"])
  else:
    _, state = net.clone(bn_momentum=0.0).apply(variables, x_cal, arch, train=True,
                                                mutable=["intermediates", "batch_stats"])
  # Layers sit at module paths ("layer1/layers_0/conv1"): key their recorded ranges by path.
  seen = traverse_util.flatten_dict(state["intermediates"], sep="/")
  by_layer = {k.rsplit("/", 1)[0]: {"input_range": v} for k, v in seen.items()}
  out = {"ranges": policy.calibrated_ranges(by_layer, net.layer_names())}
  return {**out, "batch_stats": state["batch_stats"]} if "batch_stats" in variables else out


def predict(net, variables, calibration: Dict[str, Any], x, arch: Arch, bits) -> jax.Array:
  """Logits of the subnet quantised by `bits` with its `calibrate` result."""
  variables = {**variables, **{k: v for k, v in calibration.items() if k == "batch_stats"}}
  return net.apply(variables, x, arch, bits, calibration["ranges"])


def subnet_layers(net: ElasticMLP, params, arch) -> Dict[str, Tuple[jax.Array, jax.Array]]:
  """The subnet's active layers as dense weights: {name: (kernel slice, bias slice)}."""
  check_arch(net, arch)
  fan_in, fan_out, active, _ = layer_shapes(net, arch, params[net.layer_names()[0]]["kernel"].shape[0])
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


class ElasticConv(nn.Module):
  """Bias-free convolution of the largest shape (PyTorch padding k // 2, as the zoo ResNet's `conv`); the
  masks pick the active input / output channels, `bits` / `act_range` its policy."""
  features: int
  kernel: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, in_mask, out_mask, bits, act_range):
    kernel = self.param("kernel", conv_init, (self.kernel, self.kernel, x.shape[-1], self.features))
    self.sow("intermediates", "input_range", jnp.stack([jnp.min(x), jnp.max(x)]))
    kernel = kernel * (in_mask[:, None] * out_mask[None, :])
    x, kernel = policy.fake_quantize(x, kernel, bits, act_range)
    pad = self.kernel // 2
    return jax.lax.conv_general_dilated(x, kernel, (self.strides,) * 2, ((pad, pad), (pad, pad)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class ElasticResNet(nn.Module):
  """ResNet-50's bottlenecks with elastic depth, width and inner width (see the module docstring); the
  parameter tree is the zoo `resnet50`'s. `__call__(x, arch=None, bits=None, ranges=None, *, train)`:
  logits of `arch` (None: the largest subnet)."""
  num_classes: int = 1000
  stem_width: int = 64
  stage_widths: Sequence[int] = (256, 512, 1024, 2048)  # bottleneck outputs (4 x ResNet's `planes`)
  base_depths: Sequence[int] = (1, 2, 4, 1)
  depth_list: Sequence[int] = (0, 1, 2)  # blocks added to a stage's base depth
  expand_ratio_list: Sequence[float] = (0.15, 0.2, 0.25)  # inner width / output width
  width_mult_list: Sequence[float] = (0.65, 0.8, 1.0)  # of the stem and of each stage
  bn_momentum: float = 0.9

  @property
  def depths(self) -> Tuple[int, ...]:
    return tuple(b + max(self.depth_list) for b in self.base_depths)

  def channel_tables(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stem widths (mults,), stage widths (stages, mults), inner widths (stages, mults, ratios))."""
    stem = np.array([make_divisible(self.stem_width * m) for m in self.width_mult_list])
    out = np.array([[make_divisible(w * m) for m in self.width_mult_list] for w in self.stage_widths])
    inner = np.array([[[make_divisible(round(o * e)) for e in self.expand_ratio_list] for o in row] for row in out])
    return stem, out, inner

  def layer_names(self) -> List[str]:
    """Module paths of the quantised layers, in the order of the policy's bits."""
    names = ["conv1"]
    for s, depth in enumerate(self.depths):
      for j in range(depth):
        names += [f"layer{s + 1}/layers_{j}/{c}" for c in ("conv1", "conv2", "conv3")]
        names += [f"layer{s + 1}/layers_{j}/downsample/layers_0"] if j == 0 else []
    return names + ["fc"]

  def arch_space(self) -> Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]]:
    """{gene: (shape, allowed indices)}: depth per stage (into depth_list), width of the stem and each
    stage (into width_mult_list), inner width per block (into expand_ratio_list)."""
    return {"depth": ((len(self.depths),), tuple(range(len(self.depth_list)))),
            "width": ((len(self.depths) + 1,), tuple(range(len(self.width_mult_list)))),
            "expand": ((sum(self.depths),), tuple(range(len(self.expand_ratio_list))))}

  def layer_shapes(self, arch, image_size: int):
    depth, width, expand = (np.asarray(arch[k]) for k in ("depth", "width", "expand"))
    stem, out, inner = self.channel_tables()
    size = -(-image_size // 2)  # the stride-2 stem
    previous = stem[width[..., 0]]
    layers = [(49 * 3 + 0 * previous, previous, np.ones_like(previous, bool), size * size + 0 * previous)]
    size = -(-size // 2)  # max pooling
    block = 0
    for s, base in enumerate(self.base_depths):
      o = out[s][width[..., s + 1]]
      for j in range(self.depths[s]):
        h = inner[s][width[..., s + 1], expand[..., block]]
        on = j < base + np.asarray(self.depth_list)[depth[..., s]]
        stride_size = -(-size // 2) if s > 0 and j == 0 else size
        layers += [(previous, h, on, size * size + 0 * h), (9 * h, h, on, stride_size ** 2 + 0 * h),
                   (h, o, on, stride_size ** 2 + 0 * h)]
        if j == 0:
          layers.append((previous, o, on, stride_size ** 2 + 0 * h))
        size, previous, block = stride_size, o, block + 1
    layers.append((previous, self.num_classes + 0 * previous, np.ones_like(previous, bool), 1 + 0 * previous))
    return tuple(np.stack(a, -1) for a in zip(*layers))

  @nn.compact
  def __call__(self, x, arch: Optional[Arch] = None, bits=None, ranges=None, *, train: bool = False):
    resnet.check_image(x, "elastic resnet", resnet.MIN_SIZE)
    arch = extreme_arch(self, True) if arch is None else arch
    num_layers = len(self.layer_names())
    bits = jnp.full((num_layers,), policy.FULL) if bits is None else bits
    ranges = jnp.zeros((num_layers, 2)) if ranges is None else ranges
    stem, out, inner = self.channel_tables()
    policies = iter(range(num_layers))  # layer_names() order
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=1e-5)

    def layer():
      i = next(policies)
      return bits[i], ranges[i]

    m = _mask(jnp.asarray(stem)[arch["width"][0]], self.stem_width)
    x = ElasticConv(self.stem_width, 7, 2, name="conv1")(x, jnp.ones((x.shape[-1],)), m, *layer())
    x = nn.max_pool(nn.relu(norm(name="bn1")(x) * m), (3, 3), (2, 2), ((1, 1), (1, 1)))
    block = 0
    for s, (width, base) in enumerate(zip(self.stage_widths, self.base_depths)):
      o = _mask(jnp.asarray(out[s])[arch["width"][s + 1]], width)
      inner_widths = jnp.asarray(inner[s])[arch["width"][s + 1]]  # (ratios,)
      blocks = range(block, block + self.depths[s])
      h = jnp.stack([_mask(inner_widths[arch["expand"][b]], int(inner[s].max())) for b in blocks])
      on = jnp.arange(self.depths[s]) < base + jnp.asarray(self.depth_list)[arch["depth"][s]]
      policy_of = [[layer() for _ in range(4 if j == 0 else 3)] for j in range(self.depths[s])]
      x = ElasticStage(self.depths[s], int(inner[s].max()), width, 2 if s > 0 else 1, norm,
                       name=f"layer{s + 1}")(x, m, h, o, on, policy_of)
      m, block = o, block + self.depths[s]
    return ElasticDense(self.num_classes, name="fc")(x.mean((1, 2)), m, jnp.ones((self.num_classes,)), *layer())


def _mask(n, size: int) -> jax.Array:
  """1 on the first `n` of `size` channels (OFA's slice), 0 after."""
  return (jnp.arange(size) < n).astype(jnp.float32)


class ElasticBottleneck(nn.Module):
  """The zoo ResNet's bottleneck (1x1, 3x3 strided, 1x1, projection on the first block) with masks:
  `in_mask`, inner `h`, output `o`; each BN output is masked so a masked channel stays exactly 0."""
  inner: int
  width: int
  strides: int
  project: bool
  norm: Any

  @nn.compact
  def __call__(self, x, in_mask, h, o, policies):
    y = nn.relu(self.norm(name="bn1")(ElasticConv(self.inner, 1, name="conv1")(x, in_mask, h, *policies[0])) * h)
    y = ElasticConv(self.inner, 3, self.strides, name="conv2")(y, h, h, *policies[1])
    y = nn.relu(self.norm(name="bn2")(y) * h)
    y = self.norm(name="bn3")(ElasticConv(self.width, 1, name="conv3")(y, h, o, *policies[2])) * o
    if self.project:
      x = ElasticProjection(self.width, self.strides, self.norm, name="downsample")(x, in_mask, o, policies[3])
    return nn.relu(x + y)


class ElasticProjection(nn.Module):
  """The strided 1x1 projection shortcut and its BN (the zoo's `downsample/layers_0`, `layers_1`)."""
  width: int
  strides: int
  norm: Any

  @nn.compact
  def __call__(self, x, in_mask, o, policies):
    x = ElasticConv(self.width, 1, self.strides, name="layers_0")(x, in_mask, o, *policies)
    return self.norm(name="layers_1")(x) * o


class ElasticStage(nn.Module):
  """A stage's `depth` bottlenecks (named `layers_j` as the zoo's `Seq`); block j runs when `on[j]`
  (the first always: OFA keeps a stage's first blocks), else passes its input through."""
  depth: int
  inner: int
  width: int
  strides: int
  norm: Any

  @nn.compact
  def __call__(self, x, in_mask, h, o, on, policies):
    for j in range(self.depth):
      y = ElasticBottleneck(self.inner, self.width, self.strides if j == 0 else 1, j == 0, self.norm,
                            name=f"layers_{j}")(x, in_mask if j == 0 else o, h[j], o, policies[j])
      x = y if j == 0 else jnp.where(on[j], y, x)
    return x


class SubnetResNet(nn.Module):
  """One subnet of `ElasticResNet` as its own network of the zoo ResNet's modules (its `conv`, BN and
  `Bottleneck` with a per-block inner width): the deployed form, whose shapes are the subnet's own."""
  stem: int
  widths: Tuple[int, ...]
  inner: Tuple[Tuple[int, ...], ...]  # per stage, per active block
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    norm = resnet.batch_norm(0.9, jnp.float32)
    x = nn.relu(norm(name="bn1", train=train)(resnet.conv(self.stem, 7, 2, name="conv1")(x)))
    x = nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    for s, (width, inner) in enumerate(zip(self.widths, self.inner)):
      blocks = [resnet.Bottleneck(norm, width // 4, h, 2 if s > 0 and j == 0 else 1, j == 0, 0.0)
                for j, h in enumerate(inner)]
      x = resnet.Seq(blocks, name=f"layer{s + 1}")(x, train=train)
    return nn.Dense(self.num_classes, name="fc")(x.mean((1, 2)))


def subnet_network(net: ElasticResNet, arch) -> SubnetResNet:
  check_arch(net, arch)
  depth, width, expand = (np.asarray(arch[k]) for k in ("depth", "width", "expand"))
  stem, out, inner = net.channel_tables()
  starts = np.cumsum((0,) + net.depths)
  blocks = [int(b + net.depth_list[d]) for b, d in zip(net.base_depths, depth)]
  return SubnetResNet(int(stem[width[0]]), tuple(int(out[s][width[s + 1]]) for s in range(len(blocks))),
                      tuple(tuple(int(inner[s][width[s + 1], expand[starts[s] + j]]) for j in range(n))
                            for s, n in enumerate(blocks)), net.num_classes)


def subnet_variables(net: ElasticResNet, variables, arch) -> Tuple[SubnetResNet, Dict[str, Any]]:
  """The subnet's network and its weights: every tensor of the shared ones sliced to its first channels
  (OFA's `get_active_subnet`), the blocks past each stage's depth left out."""
  small = subnet_network(net, arch)
  shapes = traverse_util.flatten_dict(jax.eval_shape(small.init, jax.random.key(0),
                                                     jnp.zeros((1, resnet.MIN_SIZE, resnet.MIN_SIZE, 3))))
  big = traverse_util.flatten_dict(variables)
  sliced = {path: big[path][tuple(slice(0, n) for n in s.shape)] for path, s in shapes.items()}
  return small, traverse_util.unflatten_dict(sliced)
