"""DRCT forward time: our Flax DRCT (jitted) vs spandrel's PyTorch DRCT (the official architecture), same
weights, same input, same run (Hsu, Lee, Chou, "DRCT: Saving Image Super-resolution away from
Information Bottleneck", CVPR 2024 Workshops).

    python -m benchmarks.drct                          # drct_tiny x2, 64x64 LR input
    python -m benchmarks.drct --model drct --size 64 --scale 4 --iters 3

The PyTorch model is spandrel's `DRCT` in eval mode under `torch.no_grad()`; ours is
`inception_zoo.models.drct` with the PyTorch weights converted by `convert.timm_to_flax`, so the two compute
the same function (tests/papers/test_drct.py checks it to 1e-4). Reports the best of `iters` calls after a
warm-up (compile) call, and the ratio of the two; both use this machine's CPU threads.
"""
import argparse

import jax
import numpy as np

from benchmarks.timing import best_time
from inception_zoo.convert import timm_to_flax
from inception_zoo.projects.drct.drct import VARIANTS, create_drct


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m benchmarks.drct", description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="drct_tiny", choices=sorted(VARIANTS))
  parser.add_argument("--size", type=int, default=64, help="LR input height and width")
  parser.add_argument("--scale", type=int, default=2)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--iters", type=int, default=5)
  args = parser.parse_args(argv)

  import torch
  from spandrel.architectures.DRCT import DRCT as TorchDRCT
  ours = create_drct(args.model, upscale=args.scale)
  torch.manual_seed(0)
  theirs = TorchDRCT(img_size=args.size, embed_dim=ours.embed_dim, depths=(6,) * ours.num_groups,
                     num_heads=ours.num_heads, window_size=ours.window_size, mlp_ratio=ours.mlp_ratio,
                     upscale=args.scale, upsampler="pixelshuffle", gc=ours.growth).eval()
  if ours.num_feat != 64:  # spandrel's upsampler width is fixed at 64
    ours = ours.clone(num_feat=64)
  x = np.random.default_rng(0).uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
  abstract = jax.eval_shape(ours.init, jax.random.key(0), x)
  variables = timm_to_flax({k: v.numpy() for k, v in theirs.state_dict().items()}, abstract)
  forward = jax.jit(lambda v, x: ours.apply(v, x)[0])
  x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

  def torch_forward():
    with torch.no_grad():
      return theirs(x_torch)

  t_jax = best_time(lambda: forward(variables, x), args.iters)
  t_torch = best_time(torch_forward, args.iters)
  diff = np.abs(np.asarray(forward(variables, x)) - torch_forward().permute(0, 2, 3, 1).numpy()).max()
  print(f"{args.model} x{args.scale}, {args.batch}x{args.size}x{args.size} LR input: "
        f"JAX {t_jax * 1e3:.1f} ms, PyTorch (spandrel) {t_torch * 1e3:.1f} ms, "
        f"PyTorch / JAX = {t_torch / t_jax:.2f}x (max |diff| {diff:.1e})")
  return {"jax_s": t_jax, "torch_s": t_torch}


if __name__ == "__main__":
  main()
