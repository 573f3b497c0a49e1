"""Prints the layout an experiment's config gives every parameter and optimizer-state leaf, with bytes
per device, without compiling or loading data (fake devices stand in for a pod):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m inception_zoo.tools.sharding_plan \
        --experiment=inception_resnet_v2 --config.mesh.data=1 --config.mesh.fsdp=8
"""
import importlib
import sys
from typing import Sequence

import jax
import optax

from inception_zoo.errors import UserError
from inception_zoo.main import apply_override, parse_args
from inception_zoo.sharding import describe, format_table, infer_shardings, make_mesh
from inception_zoo.train import classification, optim
from inception_zoo.train.state import make_init


def main(argv: Sequence[str] | None = None):
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    experiment = [a.split("=", 1)[1] for a in argv if a.startswith("--experiment=")]
    if not experiment:
      raise UserError("name the experiment: --experiment=NAME (a module of experiments/)")
    args = parse_args([a for a in argv if not a.startswith("--experiment=")])
    # A command-line entry point: the one place that may load an experiment by name.
    module = importlib.import_module(f"experiments.{experiment[0]}")
    config = module.get_config(args["config"])
    for field, value in args["overrides"]:
      apply_override(config, field, value)
    # The experiment's Task builds the model and may wrap the optimizer (sparse training's masks live
    # in the optimizer state, so they are part of the layout).
    task = getattr(module, "TASK", classification.CLASSIFICATION)
    model = task.build_model(config, config.num_classes or 1000)
    # Parameter shapes do not depend on the image size; 299 is valid for the conv nets, which have
    # no fixed size.
    size = getattr(model, "img_size", 299)
    image_shape = (size, size, 3)
    tx = task.optimizer(optim.make_optimizer(config, optax.constant_schedule(0.0)), config)
    abstract = jax.eval_shape(make_init(model, tx, image_shape), jax.random.key(0))
    mesh = make_mesh(config.mesh.to_dict())
    shardings = infer_shardings(abstract, mesh, config.sharding_rules, config.fsdp_min_size)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2)
  print(f"mesh {dict(mesh.shape)}, rules {list(config.sharding_rules)}")
  print(format_table(describe(abstract, shardings)))


if __name__ == "__main__":
  main()
