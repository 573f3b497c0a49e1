"""The EAS meta-controller and its architecture search by network transformation (paper 11 of the zoo).

Cai, Chen, Zhang, Yu, Wang, "Efficient Architecture Search by Network Transformation", AAAI 2018
(arXiv:1707.04873), Sec. 3 and 4. Facts from the authors' code (han-cai/EAS, `code/meta_controller/`,
`code/arch_search/arch_search_convnet_net2net.py`, `code/expdir_monitor/arch_manager.py`).

Controller: each layer of the current network is a token (its width on a grid x its kernel size; a
separator token stands for a pooling layer / DenseNet transition), embedded (16 dims) and read by a
bidirectional LSTM (50 units per direction).
- Net2Wider actor: one sigmoid classifier shared by all layers on the encoder output at the layer's
  position; a 1 widens the layer to the next width of the grid (layers already at the grid's largest
  width are masked out, as in the authors' `apply_wider_decision`).
- Net2Deeper actor: an LSTM decoder started from the encoder's final states that chooses, one after the
  other, the block, the layer after which to insert (masked to the block's layers) and the kernel size
  of the new layer (1, 3, 5), each choice fed back as the embedding of the decision.
REINFORCE: reward tan(acc * pi / 2) of the validation accuracy (it rewards the last points of accuracy
most), minus an exponential moving-average baseline updated with the step's mean reward before it is
subtracted (the authors' `ArchManager.reward`: b += 0.95 (mean - b)); every action of a sampled network
shares its advantage; Adam, entropy bonus 1e-5.

Search (`Search`): each step samples `num_samples` networks, each from the start net (the authors'
`get_start_net(copy=True)`) by `deeper_actions` Net2Deeper then `wider_actions` Net2Wider
transformations, trains each for a few steps from its inherited weights (the paper's point: no net is
trained from scratch) on the same mini-batches, scores it on the validation split, updates the
controller and keeps the best network so far. `policy="random"` takes the same actions uniformly at
random (p = 1/2 per layer for widening), the baseline of the authors' `random=True`. Deeper then wider
(the authors do wider first): the identity layer's BatchNorm then comes from the parent's measured
statistics, and the new layer may be widened in the same sample. Net2Wider adds the authors' relative
noise (1e-2) to the new units: without it replicated units get equal gradients and stay copies.
"""
import dataclasses
import functools
from typing import Any, Callable, Dict, List, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from inception_zoo.errors import UserError
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.eas import net2net
from inception_zoo.train.state import apply_gradients

PAD, SEP = 0, 1  # token ids below the layer tokens
MAX_ACC = 1.0 - 1e-3  # tan(pi / 2) is infinite: a perfect validation score is clipped here


@dataclasses.dataclass(frozen=True)
class Space:
  """The search space: the width grid, the kernel sizes, the most layers a block may reach
  (`max_layers`), and the fixed shapes the controller reads (`max_len` tokens, `max_blocks` blocks)."""
  widths: Tuple[int, ...]
  kernels: Tuple[int, ...] = (1, 3, 5)
  max_len: int = 32
  max_blocks: int = 3
  max_layers: int = 12

  @property
  def vocab_size(self) -> int:
    return 2 + len(self.widths) * len(self.kernels)

  def next_width(self, width: int) -> Optional[int]:
    return next((w for w in self.widths if w > width), None)

  def encode(self, arch: net2net.Arch):
    """Tokens (max_len,), length, layer position (block, index) of every token (-1 for others), and
    the layer count of every block (max_blocks,)."""
    tokens, where = [], []
    for b, block in enumerate(arch.blocks):
      if b:
        tokens.append(SEP)
        where.append((-1, -1))
      for i, (w, k) in enumerate(block):
        if w not in self.widths or k not in self.kernels:
          raise UserError(f"layer {b}.{i} ({w} channels, kernel {k}) is off the search grid "
                          f"(widths {self.widths}, kernels {self.kernels})")
        tokens.append(2 + self.widths.index(w) * len(self.kernels) + self.kernels.index(k))
        where.append((b, i))
    if len(tokens) > self.max_len or len(arch.blocks) > self.max_blocks:
      raise UserError(f"{arch.describe()} has {len(tokens)} tokens / {len(arch.blocks)} blocks; the "
                      f"controller reads at most {self.max_len} / {self.max_blocks} (raise max_len)")
    n = len(tokens)
    counts = np.zeros(self.max_blocks, np.int32)
    counts[:len(arch.blocks)] = [len(block) for block in arch.blocks]
    pad = self.max_len - n
    return (np.array(tokens + [PAD] * pad, np.int32), n, np.array(where + [(-1, -1)] * pad, np.int32), counts)

  def wider_mask(self, arch: net2net.Arch, where: np.ndarray) -> np.ndarray:
    return np.array([b >= 0 and self.next_width(arch.blocks[b][i][0]) is not None for b, i in where],
                    np.float32)


class Controller(nn.Module):
  """Encoder + Net2Wider and Net2Deeper actors. `__call__` returns the wider logits (B, L) and the
  three deeper logits (B, max_blocks), (B, max_layers), (B, len(kernels)) along the decisions it
  either samples (`key`) or is given (`deeper`, teacher forcing for the log-probabilities)."""
  space: Space
  embed_dim: int = 16
  units: int = 50

  @nn.compact
  def __call__(self, tokens, lengths, counts, deeper=None, key=None):
    s = self.space
    x = nn.Embed(s.vocab_size, self.embed_dim, name="embed")(tokens)
    (fwd, bwd), outputs = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(self.units)),
                                           nn.RNN(nn.OptimizedLSTMCell(self.units)),
                                           return_carry=True, name="encoder")(x, seq_lengths=lengths)
    wider = nn.Dense(1, name="wider")(outputs)[..., 0]
    # The decoder starts from both directions' final (c, h), projected to its size.
    carry = tuple(nn.Dense(self.units, name=f"init_{n}")(jnp.concatenate([f, b], -1))
                  for n, f, b in zip("ch", fwd, bwd))
    cell = nn.OptimizedLSTMCell(self.units, name="decoder")
    inp = jnp.broadcast_to(self.param("start", nn.initializers.normal(0.1), (self.embed_dim,)),
                           (tokens.shape[0], self.embed_dim))
    sizes = (s.max_blocks, s.max_layers, len(s.kernels))
    logits, decisions = [], []
    for t, size in enumerate(sizes):
      carry, h = cell(carry, inp)
      logit = nn.Dense(size, name=f"deeper{t}")(h)
      if t == 0:  # blocks with room for one more layer
        valid = (counts > 0) & (counts < s.max_layers)
      elif t == 1:  # layers of the chosen block
        valid = jnp.arange(size)[None] < jnp.take_along_axis(counts, decisions[0][:, None], 1)
      else:
        valid = jnp.ones_like(logit, bool)
      logit = jnp.where(valid, logit, -1e9)
      d = jax.random.categorical(jax.random.fold_in(key, t), logit) if deeper is None else deeper[:, t]
      logits.append(logit)
      decisions.append(d)
      inp = nn.Embed(size, self.embed_dim, name=f"decision{t}")(d)
    return wider, logits, jnp.stack(decisions, 1)


def log_prob_and_entropy(controller: Controller, params, batch: Dict[str, jax.Array]):
  """Per action (row of `batch`), the log-probability of its decisions and its policy's entropy. A row
  is a wider action (`is_wider`: Bernoulli per masked layer) or a deeper one (three categoricals)."""
  wider, logits, _ = controller.apply({"params": params}, batch["tokens"], batch["lengths"], batch["counts"],
                                      deeper=batch["deeper"])
  mask = batch["wider_mask"]
  logp_w = jnp.sum(mask * jnp.where(batch["wider"] > 0, jax.nn.log_sigmoid(wider), jax.nn.log_sigmoid(-wider)), 1)
  p = jax.nn.sigmoid(wider)
  ent_w = jnp.sum(mask * -(p * jax.nn.log_sigmoid(wider) + (1 - p) * jax.nn.log_sigmoid(-wider)), 1)
  ent_w = ent_w / jnp.maximum(mask.sum(1), 1.0)
  logp_d, ent_d = 0.0, 0.0
  for t, logit in enumerate(logits):
    logq = jax.nn.log_softmax(logit)
    logp_d += jnp.take_along_axis(logq, batch["deeper"][:, t:t + 1], 1)[:, 0]
    ent_d += -jnp.sum(jnp.exp(logq) * logq, 1) / len(logits)
  is_wider = batch["is_wider"]
  return jnp.where(is_wider, logp_w, logp_d), jnp.where(is_wider, ent_w, ent_d)


def reinforce_loss(controller: Controller, params, batch, advantages, num_samples: int, entropy_penalty: float):
  """-(sum over actions of advantage x log-probability) / samples - entropy bonus (the authors'
  objective: rewards divided by the batch of sampled networks, actions summed)."""
  logp, entropy = log_prob_and_entropy(controller, params, batch)
  return -jnp.sum(advantages * logp) / num_samples - entropy_penalty * jnp.mean(entropy)


def reward(acc) -> np.ndarray:
  return np.tan(np.minimum(np.asarray(acc, np.float64), MAX_ACC) * np.pi / 2)


class MovingBaseline:
  """The authors' baseline: b += decay (mean reward of the step - b), applied before subtracting."""

  def __init__(self, decay: float = 0.95):
    self.decay, self.value = decay, 0.0

  def advantages(self, rewards: np.ndarray) -> np.ndarray:
    self.value += self.decay * (float(np.mean(rewards)) - self.value)
    return rewards - self.value


@dataclasses.dataclass
class Candidate:
  arch: net2net.Arch
  variables: Any
  stats: Dict[Tuple[int, int], Tuple[Any, Any]]
  accuracy: float


class Envelope(nn.Module):
  """Every plain network of a space in one shape, so that one compiled train step serves them all: each
  block has `space.max_layers` layers of the grid's largest width and a `kernel` x `kernel` conv. A
  network sits inside with its kernels centred (a k x k 'SAME' conv is the centred one padded with
  zeros, and the taps outside it masked, `taps`, so they stay zero), its missing channels multiplied by
  0 (`channels`) and its missing layers passed through (`active`); its weights are the only ones that
  receive gradients, so training it here is training the network itself (asserted in the tests)."""
  space: Space
  num_blocks: int
  num_classes: int
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, active, channels, taps, *, train: bool = False):
    s = self.space
    k, width = max(s.kernels), max(s.widths)
    for b in range(self.num_blocks):
      if b:
        x = nn.max_pool(x, (2, 2), (2, 2))
      for i in range(s.max_layers):
        mask = jnp.broadcast_to(taps[b, i][:, :, None, None], (k, k, x.shape[-1], width))
        y = nn.Conv(width, (k, k), padding="SAME", use_bias=False, mask=mask, name=f"conv{b}_{i}")(x)
        y = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=net2net.BN_EPS,
                         name=f"bn{b}_{i}")(y)
        y = nn.relu(y) * channels[b, i]
        self.sow("intermediates", f"out{b}_{i}", y)
        x = y if b == i == 0 else jnp.where(active[b, i], y, x)  # a block's first layer always exists
    return nn.Dense(self.num_classes, name="head")(x.mean((1, 2)))

  def masks(self, arch: net2net.Arch):
    s = self.space
    active = np.zeros((self.num_blocks, s.max_layers), bool)
    channels = np.zeros((self.num_blocks, s.max_layers, max(s.widths)), np.float32)
    k_max = max(s.kernels)
    taps = np.zeros((self.num_blocks, s.max_layers, k_max, k_max), np.float32)
    for b, block in enumerate(arch.blocks):
      for i, (w, k) in enumerate(block):
        active[b, i] = True
        channels[b, i, :w] = 1.0
        o = (k_max - k) // 2
        taps[b, i, o:o + k, o:o + k] = 1.0
    return active, channels, taps

  def embed(self, arch: net2net.Arch, variables):
    """The network's variables placed in the envelope's (zeros elsewhere, identity BatchNorm)."""
    s, k_max, width = self.space, max(self.space.kernels), max(self.space.widths)
    p, st = variables["params"], variables["batch_stats"]
    params, stats, c_in = {}, {}, None
    for b in range(self.num_blocks):
      for i in range(s.max_layers):
        name, bn = f"conv{b}_{i}", f"bn{b}_{i}"
        kernel = np.zeros((k_max, k_max, c_in or p["conv0_0"]["kernel"].shape[2], width), np.float32)
        scale, bias = np.ones(width, np.float32), np.zeros(width, np.float32)
        mean, var = np.zeros(width, np.float32), np.ones(width, np.float32)
        if i < len(arch.blocks[b]):
          real = np.asarray(p[name]["kernel"])
          o = (k_max - real.shape[0]) // 2
          kernel[o:o + real.shape[0], o:o + real.shape[1], :real.shape[2], :real.shape[3]] = real
          w = real.shape[3]
          scale[:w], bias[:w] = p[bn]["scale"], p[bn]["bias"]
          mean[:w], var[:w] = st[bn]["mean"], st[bn]["var"]
        params[name], params[bn] = {"kernel": kernel}, {"scale": scale, "bias": bias}
        stats[bn] = {"mean": mean, "var": var}
        c_in = width
    head = np.zeros((width, self.num_classes), np.float32)
    head[:p["head"]["kernel"].shape[0]] = p["head"]["kernel"]
    params["head"] = {"kernel": head, "bias": np.asarray(p["head"]["bias"])}
    return {"params": params, "batch_stats": stats}

  def extract(self, arch: net2net.Arch, variables):
    """The network's own variables cut out of the envelope's."""
    k_max = max(self.space.kernels)
    p, st = variables["params"], variables["batch_stats"]
    params, stats, c_in = {}, {}, None
    for b, block in enumerate(arch.blocks):
      for i, (w, k) in enumerate(block):
        name, bn, o = f"conv{b}_{i}", f"bn{b}_{i}", (k_max - k) // 2
        kernel = p[name]["kernel"]
        params[name] = {"kernel": kernel[o:o + k, o:o + k, :c_in or kernel.shape[2], :w]}
        params[bn] = {n: a[:w] for n, a in p[bn].items()}
        stats[bn] = {n: a[:w] for n, a in st[bn].items()}
        c_in = w
    params["head"] = {"kernel": p["head"]["kernel"][:c_in], "bias": p["head"]["bias"]}
    return {"params": params, "batch_stats": stats}


def _train_fns(model: nn.Module, data, tx):
  """The jitted Adam step and the finish (BatchNorm calibration, validation accuracy, layer statistics)
  of `model`, called as `model.apply(variables, x, *masks, train=...)`."""
  x_train, y_train, x_val, y_val = data

  def step(params, opt_state, batch_stats, masks, idx):
    def loss_fn(params):
      logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, x_train[idx], *masks, train=True,
                              mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y_train[idx]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    new, _ = apply_gradients({"params": params, "opt_state": opt_state}, grads, loss, tx)
    return new["params"], new["opt_state"], loss

  def finish(params, batch_stats, masks):
    # BatchNorm statistics of the whole training split (exact, not a moving average); they are also
    # the layer statistics an identity layer inserted after a layer needs.
    _, state = model.clone(bn_momentum=0.0).apply({"params": params, "batch_stats": batch_stats}, x_train, *masks,
                                                  train=True, mutable=["batch_stats", "intermediates"])
    variables = {"params": params, "batch_stats": state["batch_stats"]}
    stats = {name: (a.mean((0, 1, 2)), a.var((0, 1, 2))) for name, (a,) in state.get("intermediates", {}).items()}
    logits = model.apply(variables, x_val, *masks)
    return variables, stats, jnp.mean(jnp.argmax(logits, -1) == y_val)

  return jax.jit(step), jax.jit(finish), jax.jit(lambda variables, masks, x: model.apply(variables, x, *masks))


class Trainer:
  """Trains a network for `steps` Adam steps on mini-batches of `batch_size` from its (inherited)
  weights, calibrates its BatchNorm on the whole training split and scores it on the validation split.
  Plain networks run in the `Envelope`, compiled once for every architecture (a compile per new shape
  would cost more than the training of these small nets; `fullbatch.fit` compiles per call); a
  DenseNet's concatenated widths have no such envelope here, so each DenseNet compiles its own step.
  The steps are a Python loop over one jitted step: XLA's CPU backend runs these convolutions about
  10x slower inside a rolled `lax.scan` loop (measured)."""

  def __init__(self, space: Space, num_blocks: int, data, num_classes: int, *, steps: int,
               batch_size: int, learning_rate: float):
    self.envelope = Envelope(space, num_blocks, num_classes)
    self.num_classes, self.steps, self.batch_size = num_classes, steps, batch_size
    self.data = tuple(map(jnp.asarray, data))
    self.tx = optax.adam(learning_rate)
    self._init = jax.jit(self.tx.init)
    self._fns = functools.lru_cache(maxsize=8)(lambda model: _train_fns(model, self.data, self.tx))

  def _model(self, arch: net2net.Arch, variables):
    """(the model to train in, its variables, its masks) for `arch`."""
    if arch.kind == "plain":
      return self.envelope, self.envelope.embed(arch, variables), self.envelope.masks(arch)
    return net2net.Net(arch, self.num_classes), variables, ()

  def logits(self, arch: net2net.Arch, variables, x) -> np.ndarray:
    """The network's evaluation-mode logits on x."""
    model, variables, masks = self._model(arch, variables)
    return np.asarray(self._fns(model)[2](variables, masks, x))

  def score(self, candidate: Candidate, x, y) -> float:
    """The accuracy of a trained network on (x, y) (e.g. the test split)."""
    return float(np.mean(np.argmax(self.logits(candidate.arch, candidate.variables, x), -1) == np.asarray(y)))

  def __call__(self, arch: net2net.Arch, variables, seed: int) -> Candidate:
    """The network trained on the mini-batches drawn with `seed`: the search trains every network on
    the same ones (common random numbers), so accuracies differ by architecture, not batch order."""
    model, embedded, masks = self._model(arch, variables)
    step, finish, _ = self._fns(model)
    params, opt_state, loss = embedded["params"], self._init(embedded["params"]), 0.0
    num_train = len(self.data[1])
    for idx in np.random.default_rng(seed).integers(0, num_train, (self.steps, self.batch_size)):
      params, opt_state, loss = step(params, opt_state, embedded["batch_stats"], masks, idx)
    if not np.isfinite(float(loss)):
      raise UserError(f"training {arch.describe()} diverged (loss {float(loss)}); lower the learning rate")
    out, stats, acc = jax.tree.map(np.asarray, finish(params, embedded["batch_stats"], masks))
    if arch.kind == "dense":  # a new dense layer needs no statistics (its consumers get zero weights)
      return Candidate(arch, out, {}, float(acc))
    stats = {(b, i): (stats[f"out{b}_{i}"][0][:w], stats[f"out{b}_{i}"][1][:w])
             for b, block in enumerate(arch.blocks) for i, (w, _) in enumerate(block)}
    return Candidate(arch, self.envelope.extract(arch, out), stats, float(acc))


def _deeper_stats(stats, block: int, after: int):
  """Layer statistics after an identity layer is inserted after (block, after): it outputs what it reads."""
  out = {}
  for (b, i), s in stats.items():
    out[(b, i + 1 if b == block and i > after else i)] = s
  out[(block, after + 1)] = stats[(block, after)]
  return out


@functools.lru_cache(maxsize=None)
def _controller_fns(space: Space, learning_rate: float, entropy_penalty: float, num_samples: int):
  """The controller and its jitted init, sampler and REINFORCE update, compiled once per setting (every
  seed's search shares them)."""
  controller, tx = Controller(space), optax.adam(learning_rate)

  def init(key):
    k1, k2 = jax.random.split(key)
    params = controller.init(k1, jnp.zeros((1, space.max_len), jnp.int32), jnp.ones((1,), jnp.int32),
                             jnp.ones((1, space.max_blocks), jnp.int32), key=k2)["params"]
    return params, tx.init(params)

  def sample(params, tokens, lengths, counts, key):
    return controller.apply({"params": params}, tokens, lengths, counts, key=key)

  def update(params, opt_state, batch, advantages):
    loss, grads = jax.value_and_grad(
        lambda p: reinforce_loss(controller, p, batch, advantages, num_samples, entropy_penalty))(params)
    new, _ = apply_gradients({"params": params, "opt_state": opt_state}, grads, loss, tx)
    return new["params"], new["opt_state"]

  return controller, jax.jit(init), jax.jit(sample), jax.jit(update)


class Search:
  """EAS's search loop for one policy ("controller" or "random"); `run` returns the best validation
  accuracy after every evaluated network."""

  def __init__(self, space: Space, trainer: Trainer, start: Candidate, *, policy: str, num_samples: int,
               wider_actions: int, deeper_actions: int, learning_rate: float, entropy_penalty: float = 1e-5,
               baseline_decay: float = 0.95, wider_noise: float = 1e-2, seed: int = 0,
               writer: Optional[MetricWriter] = None, prefix: str = ""):
    if policy not in ("controller", "random"):
      raise UserError(f"unknown search policy '{policy}' (controller, random)")
    self.space, self.trainer, self.start, self.best, self.policy = space, trainer, start, start, policy
    self.wider_noise = wider_noise
    self.num_samples, self.wider_actions, self.deeper_actions = num_samples, wider_actions, deeper_actions
    self.writer, self.prefix = writer, prefix
    self.seed, self.key = seed, jax.random.key(seed)
    self.rng = np.random.default_rng(seed)
    self.baseline = MovingBaseline(baseline_decay)
    if policy == "controller":
      self.controller, init, self._sample, self._update = _controller_fns(space, learning_rate, entropy_penalty,
                                                                          num_samples)
      self.params, self.opt_state = init(self._next_key())

  def _next_key(self):
    self.key, key = jax.random.split(self.key)
    return key

  def _decide(self, arch):
    """One state's encoding and the policy's decisions on it: wider (L,) in {0, 1}, deeper (3,)."""
    tokens, n, where, counts = self.space.encode(arch)
    mask = self.space.wider_mask(arch, where)
    if self.policy == "controller":
      logits, _, deeper = self._sample(self.params, tokens[None], np.array([n]), counts[None], self._next_key())
      p = 1.0 / (1.0 + np.exp(-np.asarray(logits[0])))
      wider = (self.rng.uniform(size=p.shape) < p).astype(np.int32)
      deeper = np.asarray(deeper[0])
    else:
      wider = self.rng.integers(0, 2, size=mask.shape).astype(np.int32)
      room = np.flatnonzero((counts > 0) & (counts < self.space.max_layers))
      block = self.rng.choice(room) if room.size else 0  # no room: a wider action, the choice is unused
      deeper = np.array([block, self.rng.integers(0, counts[block]), self.rng.integers(0, len(self.space.kernels))],
                        np.int32)
    return dict(tokens=tokens, lengths=n, counts=counts, wider=wider * mask.astype(np.int32), wider_mask=mask,
                deeper=deeper), where

  def sample(self) -> Tuple[net2net.Arch, Any, List[Dict[str, np.ndarray]]]:
    """One transformed network from the start net and the actions that made it."""
    arch, variables, stats = self.start.arch, self.start.variables, self.start.stats
    actions = []
    for _ in range(self.deeper_actions):
      if all(len(block) >= self.space.max_layers for block in arch.blocks):
        break  # every block is full
      action, _ = self._decide(arch)
      block, after, k = (int(d) for d in action["deeper"])
      arch, variables = net2net.deepen(arch, variables, block, after, self.space.kernels[k], self.rng,
                                       stats=stats.get((block, after)))
      stats = _deeper_stats(stats, block, after) if stats else stats
      actions.append({**action, "is_wider": False})
    for _ in range(self.wider_actions):
      action, where = self._decide(arch)
      for (b, i), widen in zip(where, action["wider"]):
        if widen:
          new_width = self.space.next_width(arch.blocks[b][i][0])
          arch, variables = net2net.widen(arch, variables, int(b), int(i), new_width, self.rng,
                                          noise=self.wider_noise)
      actions.append({**action, "is_wider": True})
    return arch, variables, actions

  def step(self, t: int) -> List[float]:
    children, actions, owner = [], [], []
    for m in range(self.num_samples):
      arch, variables, acts = self.sample()
      children.append(self.trainer(arch, variables, self.seed))
      actions += acts
      owner += [m] * len(acts)
    accs = np.array([c.accuracy for c in children])
    advantages = self.baseline.advantages(reward(accs))
    if self.policy == "controller":
      batch = {k: jnp.asarray(np.stack([a[k] for a in actions])) for k in actions[0]}
      self.params, self.opt_state = self._update(self.params, self.opt_state, batch,
                                                    jnp.asarray(advantages[owner], jnp.float32))
    best_child = children[int(np.argmax(accs))]
    if best_child.accuracy > self.best.accuracy:
      self.best = best_child
    if self.writer is not None:
      self.writer.write(t + 1, {f"{self.prefix}mean_accuracy": float(accs.mean()),
                                f"{self.prefix}best_accuracy": self.best.accuracy,
                                f"{self.prefix}baseline": self.baseline.value})
    return accs.tolist()

  def run(self, num_steps: int, log: Optional[Callable[[str], None]] = None) -> np.ndarray:
    """Best validation accuracy so far after each evaluated network (the start net's first)."""
    curve = [self.best.accuracy]
    for t in range(num_steps):
      best_before = self.best.accuracy
      for acc in self.step(t):
        best_before = max(best_before, acc)
        curve.append(best_before)
      if log is not None:
        log(f"{self.prefix}step {t + 1}/{num_steps}: best {self.best.accuracy:.4f} {self.best.arch.describe()}")
    return np.array(curve)
