"""Memory per device under data parallelism, FSDP and tensor parallelism, on 8 devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.memory

For each model (the paper's full setting: its optimizer, image size and sharding rules) and layout:

- state: parameter + optimizer-state (+ EMA, batch statistics) bytes per device, from the sharding
  rules and shapes alone (what `python -m inception_zoo.tools.sharding_plan` tabulates);
- step: XLA's memory analysis of the compiled train step per device (arguments + outputs - donated
  aliases + temporaries), i.e. what one accelerator needs at `--batch_per_device` images;
- host peak: the peak resident memory of a process that initialises the sharded state and runs one
  step (`--run`; each layout in a fresh process). The 8 CPU "devices" share one host, so this is the
  whole mesh's memory plus the runtime's, not one device's.
"""
import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from inception_zoo import create_model, sharding
from inception_zoo.train import classification, optim
from inception_zoo.train.state import make_init

# model -> (experiment, setting)
MODELS = {"inception_resnet_v2": ("inception_resnet_v2", None),
          "swinv2_tiny_window8_256": ("swinv2", "tiny")}
LAYOUTS = {"DP": {"data": 8}, "FSDP": {"data": 1, "fsdp": 8}, "TP": {"data": 2, "model": 4}}


def config_of(model_name: str):
  experiment, arg = MODELS[model_name]
  return importlib.import_module(f"experiments.{experiment}").get_config(arg)


def setting(model_name: str, layout: str):
  config = config_of(model_name)
  axes = {a: 1 for a in config.mesh}  # keep the axes the rules name (e.g. `model`)
  axes.update(LAYOUTS[layout])
  mesh = sharding.make_mesh(axes)
  model = create_model(config.model_name, num_classes=1000, **config.model.to_dict())
  size = getattr(model, "img_size", 299)
  schedule = optim.make_schedule(config, steps_per_epoch=1000, total_steps=100_000)
  tx = optim.make_optimizer(config, schedule)
  abstract = jax.eval_shape(make_init(model, tx, (size, size, 3)), jax.random.key(0))
  shardings = sharding.infer_shardings(abstract, mesh, config.sharding_rules, config.fsdp_min_size)
  return config, mesh, model, tx, schedule, size, abstract, shardings


def measure(model_name: str, layout: str, batch_per_device: int, run: bool) -> Dict[str, int]:
  config, mesh, model, tx, schedule, size, abstract, shardings = setting(model_name, layout)
  state_bytes = sum(r[3] for r in sharding.describe(abstract, shardings))
  batch = batch_per_device * int(np.prod([mesh.shape[a] for a in sharding.DATA_AXES if a in mesh.shape]))
  batch_sharding = sharding.batch_sharding(mesh)
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32, sharding=batch_sharding)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=batch_sharding)
  step = jax.jit(classification.make_train_step(model, tx, schedule, config),
                 in_shardings=(shardings, batch_sharding),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  compiled = step.lower(abstract, {"image": images, "label": labels}).compile()
  m = compiled.memory_analysis()
  out = {"state": state_bytes, "batch": batch,
         "step": m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
         + m.temp_size_in_bytes}
  if run:
    state = jax.jit(make_init(model, tx, (size, size, 3)), out_shardings=shardings)(jax.random.key(0))
    x = jax.device_put(np.random.default_rng(0).normal(size=images.shape).astype(np.float32),
                       batch_sharding)
    y = jax.device_put(np.zeros(batch, np.int32), batch_sharding)
    state, metrics = compiled(state, {"image": x, "label": y})
    jax.block_until_ready(metrics)
    out["host_peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--batch_per_device", type=int, default=2)
  parser.add_argument("--run", action=argparse.BooleanOptionalAction, default=True,
                      help="also run one step per layout in a fresh process for the host peak")
  parser.add_argument("--one", nargs=2, metavar=("MODEL", "LAYOUT"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if jax.device_count() != 8:
    raise SystemExit("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  if args.one:  # a child: one measurement, as JSON
    print(json.dumps(measure(*args.one, args.batch_per_device, run=True)))
    return
  print(f"8 {jax.devices()[0].platform} devices, jax {jax.__version__}; bytes per device; "
        f"{args.batch_per_device} images per data-parallel device")
  print(f"{'model':26}{'layout':>8}{'state':>16}{'step':>16}{'host peak':>16}")
  for name in args.models.split(","):
    if name not in MODELS:
      raise SystemExit(f"unknown model '{name}' (one of {', '.join(MODELS)})")
    for layout in LAYOUTS:
      if layout == "TP" and "model" not in config_of(name).mesh:
        continue  # the conv nets have no tensor-parallel rules
      if args.run:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--one", name, layout,
                               f"--batch_per_device={args.batch_per_device}"],
                              capture_output=True, text=True, env=os.environ)
        if proc.returncode:
          raise SystemExit(proc.stderr[-2000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
      else:
        r = measure(name, layout, args.batch_per_device, run=False)
      peak = f"{r['host_peak']:,}" if "host_peak" in r else "-"
      print(f"{name:26}{layout:>8}{r['state']:>16,}{r['step']:>16,}{peak:>16}", flush=True)


if __name__ == "__main__":
  main()
