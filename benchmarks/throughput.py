"""Forward and train-step throughput of a zoo model against its timm (PyTorch) twin, in the same run.

    python -m benchmarks.throughput --model inception_v4 --batch 8
    python -m benchmarks.throughput --model swinv2_tiny_window8_256   # any zoo model timm also has

Prints img/s for JAX and PyTorch, their ratio (JAX / PyTorch; above 1 means JAX is faster) and XLA's
compile time. Both sides use the same architecture, input size (the paper's unless `--size`), batch,
float32, and one optimizer for every family (Inception's RMSProp, decay 0.9, eps 1.0; its cost is small
beside the network's) with BatchNorm in training mode for the train step. On a CPU
PyTorch uses every core; where JAX runs on a GPU, PyTorch runs on CUDA too (channels-last, as its
convolutions prefer). Speed is measured here, never in tests.
"""
import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inception_zoo import create_model, list_models


def paper_size(name: str) -> int:
  """The resolution the model's paper trains at: Swin V2's fixed `img_size`, 299 for Inception-v3, v4 and
  Inception-ResNet, 224 for the rest."""
  model = create_model(name, num_classes=1000)
  if hasattr(model, "img_size"):
    return model.img_size
  return 299 if name.startswith(("inception_v3", "inception_v4", "inception_resnet")) else 224


def timed(fn, warmup: int, iters: int) -> float:
  """Seconds per call after `warmup` calls (each call must block until its result is ready)."""
  for _ in range(warmup):
    fn()
  t = time.perf_counter()
  for _ in range(iters):
    fn()
  return (time.perf_counter() - t) / iters


def bench_jax(name, batch, size, iters):
  model = create_model(name, num_classes=1000)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, size, size, 3)), jnp.float32)
  y = jnp.zeros((batch,), jnp.int32)
  variables = jax.jit(model.init)(jax.random.key(0), x[:1])
  tx = optax.rmsprop(0.045, decay=0.9, eps=1.0, initial_scale=1.0, momentum=0.9)
  variables.setdefault("batch_stats", {})  # transformers have no BatchNorm
  opt_state = tx.init(variables["params"])

  forward = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])

  def train_step(params, batch_stats, opt_state, x, y):
    def loss_fn(p):
      (logits, _), upd = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                     mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd
    (_, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), upd.get("batch_stats", {}), opt_state

  train = jax.jit(train_step, donate_argnums=(0, 1, 2))
  t = time.perf_counter()
  forward_c = forward.lower(variables, x).compile()
  compile_fwd = time.perf_counter() - t
  t = time.perf_counter()
  train_c = train.lower(variables["params"], variables["batch_stats"], opt_state, x, y).compile()
  compile_train = time.perf_counter() - t
  fwd = timed(lambda: forward_c(variables, x).block_until_ready(), 2, iters)
  state = [variables["params"], variables["batch_stats"], opt_state]

  def one():
    state[:] = train_c(*state, x, y)
    jax.block_until_ready(state[0])

  trn = timed(one, 2, iters)
  return batch / fwd, batch / trn, compile_fwd, compile_train


def bench_torch(name, batch, size, iters, cuda: bool):
  import timm
  import torch
  torch.set_num_threads(os.cpu_count())
  device = "cuda" if cuda else "cpu"
  fmt = torch.channels_last if cuda else torch.contiguous_format
  model = timm.create_model(name, pretrained=False).to(device, memory_format=fmt)
  x = torch.randn(batch, 3, size, size, device=device).to(memory_format=fmt)
  y = torch.zeros(batch, dtype=torch.long, device=device)
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  model.eval()
  with torch.no_grad():
    fwd = timed(lambda: (model(x), sync()), 2, iters)
  model.train()
  opt = torch.optim.RMSprop(model.parameters(), lr=0.045, alpha=0.9, eps=1.0, momentum=0.9)

  def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    sync()

  trn = timed(step, 2, iters)
  return batch / fwd, batch / trn


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="inception_v4", help="a zoo model that timm also has")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=0, help="default: the paper's resolution")
  parser.add_argument("--iters", type=int, default=5)
  args = parser.parse_args()
  import timm
  if args.model not in set(list_models()) & set(timm.list_models()):
    parser.error(f"unknown model '{args.model}': one of "
                 f"{', '.join(sorted(set(list_models()) & set(timm.list_models())))}")
  args.size = args.size or paper_size(args.model)
  print(f"{args.model}, batch {args.batch}, {args.size}px, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, jax {jax.__version__} on {jax.devices()[0].platform}")
  jf, jt, cf, ct = bench_jax(args.model, args.batch, args.size, args.iters)
  tf, tt = bench_torch(args.model, args.batch, args.size, args.iters,
                       cuda=jax.devices()[0].platform == "gpu")
  print(f"{'':12}{'JAX img/s':>12}{'timm img/s':>12}{'ratio':>8}")
  print(f"{'forward':12}{jf:12.2f}{tf:12.2f}{jf / tf:8.2f}")
  print(f"{'train step':12}{jt:12.2f}{tt:12.2f}{jt / tt:8.2f}")
  print(f"XLA compile: forward {cf:.1f} s, train step {ct:.1f} s")


if __name__ == "__main__":
  main()
