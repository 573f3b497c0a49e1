"""Test session setup: 8 fake CPU devices (sharding tests need them; other tests pick a 1-device mesh),
a persistent XLA compilation cache shared by the tests of one run, and small shared fixtures."""
import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)


def pytest_configure(config):
  if jax.device_count() != 8:
    raise pytest.UsageError(f"tests need 8 CPU devices; XLA_FLAGS={os.environ.get('XLA_FLAGS')!r} "
                            f"gave {jax.device_count()} (set it before anything imports jax)")


@pytest.fixture
def digits_config():
  """A small, fast classification config on embedded digits: the Inception experiment's trainer settings
  (RMSProp, warm-up, EMA, clipping) with the 7-layer CIFAR ResNet at 8x8 (`run_helpers.SMALL_NET`), 1 device."""
  from experiments.common_inception import inception_config
  from inception_zoo.main import apply_override
  from run_helpers import SMALL_NET
  c = inception_config("inception_v4", "runlocal")
  for field, text in SMALL_NET.items():
    apply_override(c, field, text)
  c.input.batch_size = 32
  c.input.eval_batch_size = 120
  c.schedule.warmup_epochs = 0.2
  c.total_steps = 6
  c.log_every = 2
  c.checkpoint_every = 3
  c.mesh.data = 1
  return c


# `make reproduce`: claim runs too long for CI carry `@pytest.mark.reproduce`; `make test` deselects them,
# and a `-m reproduce` session writes what they measured (`record_property`) with the commit and machine
# to reproduce/RESULTS.md, which is committed. Each row names its own commit: a session that runs some
# of the claims (`make reproduce` with `-k`) replaces their rows and keeps the others.
_REPRODUCED = []
_HEADER = ["# `make reproduce` results", "", "| Claim test | Result | Time | Measured | Commit, date, machine |",
           "|---|---|---|---|---|"]


def pytest_runtest_logreport(report):
  if report.when == "call" and "reproduce" in report.keywords:
    _REPRODUCED.append(report)


def _rows(path: str) -> dict:
  """The rows of an existing RESULTS.md by test id."""
  if not os.path.exists(path):
    return {}
  rows = {}
  for line in open(path).read().splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if len(cells) == 5 and cells[0].startswith("`tests/"):
      rows[cells[0]] = line
  return rows


def pytest_sessionfinish(session):
  # xdist workers see their own tests' reports too: only the controller, which sees all, writes the file.
  if (not _REPRODUCED or session.config.getoption("markexpr", "") != "reproduce"
      or hasattr(session.config, "workerinput")):
    return
  import datetime
  import platform
  import subprocess
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                          text=True).stdout.strip()
  dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                         capture_output=True, text=True).stdout.strip()
  where = (f"`{commit}`{' + uncommitted changes' if dirty else ''}, {datetime.date.today().isoformat()}, "
           f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
  path = os.path.join(root, "reproduce", "RESULTS.md")
  rows = _rows(path)
  for r in _REPRODUCED:
    measured = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.user_properties)
    rows[f"`{r.nodeid}`"] = f"| `{r.nodeid}` | {r.outcome} | {r.duration:.0f} s | {measured} | {where} |"
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(_HEADER + [rows[k] for k in sorted(rows)]) + "\n")
