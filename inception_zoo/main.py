"""Command line of every experiment: `python -m experiments.<name> [flags]`.

  --config=ARG          argument of the experiment's get_config (e.g. runlocal = the CPU setting)
  --config.a.b=VALUE    override a config field (Python literal, or a bare string)
  --workdir=DIR         checkpoints, metrics.jsonl, config.json, TensorBoard events
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I
                        multi-process runs (GPU clusters); on TPU pods use --multihost alone

A mistake in the command (an unknown field, a bad value, an unknown model) ends with one line naming
it, and exit status 2.
"""
import ast
import logging
import numbers
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

import jax
import ml_collections

from inception_zoo.errors import UserError, did_you_mean


def flat_fields(config: ml_collections.ConfigDict, prefix: str = "") -> List[str]:
  out = []
  for k, v in config.items():
    out.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      out += flat_fields(v, prefix + k + ".")
  return out


def _parse_value(text: str, current):
  if isinstance(current, bool):
    if text.lower() in ("true", "false"):
      return text.lower() == "true"
    raise ValueError("expected true or false")
  if isinstance(current, str):
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if current is None:  # an unset field takes a bare string too (e.g. a data_dir)
      return text
    raise ValueError(f"'{text}' is not a Python literal")


def apply_override(config: ml_collections.ConfigDict, field: str, text: str):
  """Sets `config.<field>` from command-line text, keeping the field's type."""
  *parents, leaf = field.split(".")
  node = config
  for name in parents:
    child = node.get(name) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(child, ml_collections.ConfigDict):
      raise UserError(_unknown(config, field))
    node = child
  # `config.model` holds create_model's keyword options: any option may be added (create_model
  # rejects unknown ones with a suggestion); elsewhere only existing fields can be set.
  if leaf not in node and parents != ["model"]:
    raise UserError(_unknown(config, field))
  current = node.get(leaf)
  try:
    value = _parse_value(text, current)
    if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
      value = type(current)(value)
    node[leaf] = value
  except (ValueError, SyntaxError, TypeError) as e:
    raise UserError(f"bad value for config.{field}: '{text}' ({type(current).__name__} expected; {e})")


def _unknown(config, field: str) -> str:
  return f"unknown config field 'config.{field}'{did_you_mean(field, flat_fields(config))}"


def parse_args(argv: Sequence[str]) -> Dict[str, object]:
  args: Dict[str, object] = {"config": None, "workdir": None, "overrides": [], "multihost": False,
                             "coordinator_address": None, "num_processes": None, "process_id": None}
  for arg in argv:
    if not arg.startswith("--") or "=" not in arg and arg != "--multihost":
      raise UserError(f"unexpected argument '{arg}' (flags look like --name=value)")
    if arg == "--multihost":
      args["multihost"] = True
      continue
    name, value = arg[2:].split("=", 1)
    if name.startswith("config."):
      args["overrides"].append((name[len("config."):], value))
    elif name in args and name != "overrides":
      args[name] = value
    else:
      raise UserError(f"unknown flag '--{name}'{did_you_mean(name, [k for k in args if k != 'overrides'])}")
  return args


def maybe_initialize_distributed(args: Dict[str, object]):
  """jax.distributed for multi-process runs: explicit flags (GPU clusters, local processes) or
  auto-detection (`--multihost`: TPU pods and SLURM jobs, where JAX reads the environment)."""
  if not (args["coordinator_address"] or args["multihost"]):
    return
  if args["coordinator_address"] and None in (args["num_processes"], args["process_id"]):
    raise UserError("--coordinator_address needs --num_processes and --process_id")
  # CPU processes exchange data through gloo (GPUs use NCCL, TPUs their interconnect, unaffected).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if args["coordinator_address"]:
    jax.distributed.initialize(coordinator_address=args["coordinator_address"],
                               num_processes=int(args["num_processes"]),
                               process_id=int(args["process_id"]))
  else:
    jax.distributed.initialize()


def run_experiment(get_config: Callable[[Optional[str]], ml_collections.ConfigDict],
                   trainer: Callable[[ml_collections.ConfigDict, str], object],
                   argv: Optional[Sequence[str]] = None, default_workdir: str = "workdirs"):
  """Parses flags, builds the config, runs `trainer(config, workdir)`; one-line errors, exit 2."""
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
  try:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    config = get_config(args["config"])
    for field, value in args["overrides"]:
      apply_override(config, field, value)
    maybe_initialize_distributed(args)
    workdir = args["workdir"] or os.path.join(default_workdir, config.get("name", "run"))
    result = trainer(config, workdir)
    if jax.process_index() == 0:
      print(summary(config.get("name", "run"), result, workdir))
    return result
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2)


def summary(name: str, result, workdir: str, limit: int = 16) -> str:
  """The lines every run ends with: its scalar results (nested dicts flattened to a/b) and where its
  metrics and figures are."""
  flat: Dict[str, float] = {}

  def walk(prefix: str, value):
    if isinstance(value, dict):
      for k, v in value.items():
        walk(f"{prefix}/{k}" if prefix else str(k), v)
    elif isinstance(value, numbers.Number) or (hasattr(value, "shape") and value.shape == ()):
      flat[prefix] = float(value)

  walk("", result if isinstance(result, dict) else {})
  shown = ", ".join(f"{k} {v:.4g}" for k, v in list(flat.items())[:limit])
  more = f" (+{len(flat) - limit} more)" if len(flat) > limit else ""
  figures = sorted(f for f in os.listdir(workdir) if f.endswith(".png")) if os.path.isdir(workdir) else []
  lines = [f"{name} done" + (f": {shown}{more}" if shown else ""),
           f"  workdir {workdir}" + (f" (figures: {', '.join(figures)})" if figures else "")]
  return "\n".join(lines)


def require_cpu_data(c: ml_collections.ConfigDict, data: str):
  """Refuses a setting given as config only (the paper's full scale, whose data or trainer is not here):
  the experiment runs on `data` ("digits", "sample_images", "synthetic")."""
  if c.data != data:
    raise UserError(f"the '{c.data}' setting is given as config only; this experiment runs the "
                    f"{data.replace('_', '-')} setting (--config=runlocal)")
