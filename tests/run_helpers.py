"""Running the tiny Inception-v4 digits experiment in subprocesses, for fault and multi-process tests."""
import json
import os
import subprocess
import sys
import time

from inception_zoo import ckpt

# 1/16 width, one block per stage, batch 32, a log row per step: the real command line, small.
TINY = ["--config=runlocal", "--config.model.width=0.0625", "--config.model.depths=(1, 1, 1)",
        "--config.input.batch_size=32", "--config.schedule.warmup_epochs=0.2", "--config.log_every=1",
        "--config.checkpoint_every=3"]
# Where the trainer, not the network, is under test and a step's speed does not matter: a 7-layer CIFAR
# ResNet on the 8x8 digits compiles in seconds, where the tiny Inception-v4 at 75x75 takes about a minute
# per process. (Tests that kill a run mid-way keep the Inception: its slower steps give them time to.)
SMALL_NET = {"model_name": "resnet20", "model": "{'depth': 8, 'widths': (8, 16, 32)}",
             "input.pp_train": "gray_to_rgb|value_range(-1, 1)",
             "input.pp_eval": "gray_to_rgb|value_range(-1, 1)"}


def flags(overrides):
  return [f"--config.{field}={text}" for field, text in overrides.items()]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir, *flags):
  return [sys.executable, "-m", "experiments.inception_v4", *TINY, f"--workdir={workdir}", *flags]


def environment(devices: int):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONUNBUFFERED="1")
  env.pop("CI", None)  # nothing in the trainer depends on it; keep the child identical
  return env


def run(workdir, *flags, devices: int = 1, timeout: int = 900) -> subprocess.CompletedProcess:
  proc = subprocess.run(command(workdir, *flags), cwd=ROOT, env=environment(devices), capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def start(workdir, *flags, devices: int = 1, log=None) -> subprocess.Popen:
  """Starts a run whose output goes to the file `proc.log`: with pipes, a child blocked on a full pipe
  that nobody reads yet would stall its peers' collectives."""
  log = str(log or f"{workdir}.log")
  with open(log, "w") as f:
    proc = subprocess.Popen(command(workdir, *flags), cwd=ROOT, env=environment(devices), stdout=f,
                            stderr=subprocess.STDOUT)
  proc.log = log
  return proc


def output(proc: subprocess.Popen) -> str:
  with open(proc.log) as f:
    return f.read()[-3000:]


def losses(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def wait_for_step(proc: subprocess.Popen, workdir, step: int, timeout: float = 900):
  """Blocks until the run has logged `step` (so steps up to it are done)."""
  deadline = time.time() + timeout
  while max(losses(workdir), default=0) < step:
    if proc.poll() is not None:
      raise AssertionError(f"run ended early: {output(proc)}")
    if time.time() > deadline:
      proc.kill()
      raise AssertionError(f"no step {step} within {timeout} s")
    time.sleep(0.2)


def checkpoint_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(x) for x in os.listdir(d) if x.isdigit())


def final_state(workdir, step):
  """The train state saved at `step` as numpy arrays, whatever mesh or processes wrote it."""
  return ckpt.restore_numpy(os.path.join(os.path.abspath(workdir), "checkpoints", str(step), "state"))
