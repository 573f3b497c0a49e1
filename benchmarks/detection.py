"""Detection against torchvision in the same run: RoIAlign and NMS (the ops the detectors spend on) and the
Mask R-CNN R50-FPN train step.

    python -m benchmarks.detection                      # CPU: 320 px images, batch 2
    python -m benchmarks.detection --size 800 --max-size 1344 --batch 2   # the COCO canvas (on a GPU)

Prints milliseconds for JAX and torchvision and their ratio (torchvision / JAX: above 1 means JAX is
faster). Both sides run the same shapes: RoIAlign 7x7 (sampling 2, aligned=False, as the box head) of
`--rois` boxes per image on a stride-4 map of 256 channels; NMS at 0.7 over `--boxes` random boxes; the
train step with SGD on random images and rectangular instances (torchvision builds its mask targets from
full masks, JAX from 112 px crops; both sample 512 RoIs per image). On a CPU torch uses every core.
Speed is measured here, never in tests.
"""
import argparse
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.timing import best_time
from inception_zoo import create_model
from inception_zoo.ops import crop_masks, nms, roi_align


def random_boxes(rng, n: int, h: int, w: int, min_side: float = 8.0) -> np.ndarray:
  xy = rng.uniform(0, [w - min_side, h - min_side], size=(n, 2))
  wh = rng.uniform(min_side, [w / 3, h / 3], size=(n, 2))
  return np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1).astype(np.float32)


def bench_ops(args, rng):
  import torch
  import torchvision
  h, w = args.size // 4, args.max_size // 4
  features = rng.normal(size=(args.batch, h, w, 256)).astype(np.float32)
  boxes = np.concatenate([random_boxes(rng, args.rois, args.size, args.max_size) for _ in range(args.batch)])
  index = np.repeat(np.arange(args.batch, dtype=np.int32), args.rois)
  align = jax.jit(lambda f, b, i: roi_align(f, b, i, (7, 7), 0.25, 2, False))
  f, b, i = jnp.asarray(features), jnp.asarray(boxes), jnp.asarray(index)
  ours = best_time(lambda: align(f, b, i), args.iters)
  tf = torch.from_numpy(features.transpose(0, 3, 1, 2).copy())
  tb = torch.from_numpy(np.concatenate([index[:, None].astype(np.float32), boxes], 1))
  theirs = best_time(lambda: torchvision.ops.roi_align(tf, tb, (7, 7), 0.25, 2, False), args.iters)
  rows = [(f"RoIAlign {len(boxes)} RoIs", ours, theirs)]

  nb = random_boxes(rng, args.boxes, args.size, args.max_size)
  scores = rng.uniform(size=args.boxes).astype(np.float32)
  suppress = jax.jit(lambda b, s: nms(b, s, 0.7, 1000))
  jb, js = jnp.asarray(nb), jnp.asarray(scores)
  ours = best_time(lambda: suppress(jb, js), args.iters)
  tb, ts = torch.from_numpy(nb), torch.from_numpy(scores)
  theirs = best_time(lambda: torchvision.ops.nms(tb, ts, 0.7), args.iters)
  rows.append((f"NMS {args.boxes} boxes", ours, theirs))
  return rows


def instances(rng, args, n: int = 8):
  boxes = np.stack([random_boxes(rng, n, args.size, args.max_size, 16.0) for _ in range(args.batch)])
  masks = np.zeros((args.batch, n, args.size, args.max_size), np.uint8)
  for b in range(args.batch):
    for k, (x1, y1, x2, y2) in enumerate(boxes[b].astype(int)):
      masks[b, k, y1 + 2:y2 - 2, x1 + 2:x2 - 2] = 1
  labels = rng.integers(1, 91, size=(args.batch, n)).astype(np.int32)
  return boxes, labels, masks


def bench_train_step(args, rng):
  import torch
  import torchvision
  images = rng.normal(size=(args.batch, args.size, args.max_size, 3)).astype(np.float32)
  boxes, labels, masks = instances(rng, args)

  model = create_model("maskrcnn_resnet50_fpn", paste_masks=False)
  tx = optax.sgd(0.02, momentum=0.9)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.asarray(images[:1]))
  crops = np.stack([crop_masks(masks[b], boxes[b]) for b in range(args.batch)])
  targets = {"boxes": jnp.asarray(boxes), "labels": jnp.asarray(labels), "masks": jnp.asarray(crops),
             "instance_valid": jnp.ones(labels.shape, bool)}

  @jax.jit
  def step(params, opt_state, x):
    def loss_fn(p):
      losses = model.apply({**variables, "params": p}, x, targets=targets, train=True,
                           rngs={"sampling": jax.random.key(0)})
      return sum(losses.values())
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  state = [variables["params"], tx.init(variables["params"])]
  x = jnp.asarray(images)

  def one():
    state[:] = step(*state, x)
    return state[0]

  ours = best_time(one, args.iters)

  torch.set_num_threads(os.cpu_count())
  reference = torchvision.models.detection.maskrcnn_resnet50_fpn(
      weights=None, weights_backbone=None, min_size=args.size, max_size=args.max_size,
      image_mean=[0.0] * 3, image_std=[1.0] * 3).train()
  opt = torch.optim.SGD([p for p in reference.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
  timgs = [torch.from_numpy(im.transpose(2, 0, 1).copy()) for im in images]
  ttargets = [{"boxes": torch.from_numpy(boxes[b]), "labels": torch.from_numpy(labels[b]).long(),
               "masks": torch.from_numpy(masks[b])} for b in range(args.batch)]

  def torch_step():
    opt.zero_grad(set_to_none=True)
    sum(reference(timgs, ttargets).values()).backward()
    opt.step()

  theirs = best_time(torch_step, args.iters)
  return [(f"Mask R-CNN train step, batch {args.batch}", ours, theirs)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=320, help="image height (the canvas' short side)")
  parser.add_argument("--max-size", type=int, default=320, help="image width")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--rois", type=int, default=512, help="RoIs per image for RoIAlign")
  parser.add_argument("--boxes", type=int, default=4000, help="boxes for NMS")
  parser.add_argument("--iters", type=int, default=3)
  parser.add_argument("--skip-train", action="store_true", help="only the ops")
  args = parser.parse_args()
  print(f"{args.size}x{args.max_size} px, batch {args.batch}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, jax {jax.__version__} on {jax.devices()[0].platform}")
  rng = np.random.default_rng(0)
  rows = bench_ops(args, rng) + ([] if args.skip_train else bench_train_step(args, rng))
  print(f"{'':40}{'JAX ms':>10}{'torchvision ms':>16}{'ratio':>8}")
  for name, ours, theirs in rows:
    print(f"{name:40}{1e3 * ours:10.1f}{1e3 * theirs:16.1f}{theirs / ours:8.2f}")


if __name__ == "__main__":
  main()
