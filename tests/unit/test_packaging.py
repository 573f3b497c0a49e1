"""The package as a user installs it: a wheel built from the tree, installed with `--no-deps --target`,
imported from outside the checkout with only that target and this environment's site-packages on the
path (no editable install, no current directory), runs two experiments' CPU settings. And no library
module loads another by name, which the import contracts (`lint-imports`) could not see."""
import os
import pathlib
import shutil
import site
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).parents[2]

# Every module of both packages imported from the target, each file checked to come from there.
IMPORT_ALL = """
import importlib, pkgutil, sys
target = sys.argv[1]
import inception_zoo, experiments
assert inception_zoo.__file__.startswith(target), inception_zoo.__file__
names = []
for pkg in (inception_zoo, experiments):
  for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    module = importlib.import_module(m.name)
    assert module.__file__.startswith(target), (m.name, module.__file__)
    names.append(m.name)
print(len(names), "modules")
"""

RUN = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__')"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(python command with an isolated path, target directory) for the wheel of this tree."""
  tmp = tmp_path_factory.mktemp("wheel")
  src = tmp / "src"  # a copy, so that the build writes nothing into the checkout
  src.mkdir()
  for name in ("setup.cfg", "pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, src / name)
  for name in ("inception_zoo", "experiments"):
    shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True)
  wheel, = (tmp / "dist").glob("inception_zoo-*.whl")
  target = tmp / "target"
  subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                  str(wheel)], check=True, capture_output=True)
  # -I: no PYTHONPATH, no current directory, no user site; -S: no .pth files, so the development
  # environment's editable finder never loads; the path is the target, then the environment's packages.
  paths = [str(target), *site.getsitepackages(), sysconfig.get_paths()["purelib"]]
  boot = f"import sys; sys.path[:0] = {paths!r}; "
  return (lambda code, *args: [sys.executable, "-I", "-S", "-c", boot + code, *args]), str(target)


def run_outside(tmp_path, command):
  env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
  proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_wheel_holds_every_module(installed, tmp_path):
  python, target = installed
  out = run_outside(tmp_path, python(IMPORT_ALL, target))
  library = sum(1 for p in (ROOT / "inception_zoo").rglob("*.py")
                if p.name != "__init__.py" or p.parent.name != "inception_zoo")
  assert int(out.split()[0]) >= library  # the package's modules, all from the wheel


@pytest.mark.parametrize("experiment, flags", [
    # the classification trainer on scikit-learn's digits (data shipped with a package): 2 steps
    ("random_pruning", ["--config=runlocal", "--config.widths=(8,)", "--config.total_steps=2"]),
    # a full-batch fit on generated data
    ("temperature_moe", ["--config=runlocal", "--config.sample_sizes=(100,)", "--config.repetitions=1",
                         "--config.total_steps=5"]),
])
def test_experiment_runs_from_the_wheel(installed, tmp_path, experiment, flags):
  python, _ = installed
  run_outside(tmp_path, python(RUN, f"experiments.{experiment}", *flags, f"--workdir={tmp_path / 'run'}"))
  assert any((tmp_path / "run").iterdir()), "the run wrote nothing to its workdir"


def test_no_module_is_imported_by_name():
  """`importlib` / `__import__` only in the command-line tools (inception_zoo/tools/)."""
  offenders = []
  for package in ("inception_zoo", "experiments"):
    for path in (ROOT / package).rglob("*.py"):
      if "tools" in path.relative_to(ROOT).parts:
        continue
      text = path.read_text()
      if "importlib" in text or "__import__(" in text:
        offenders.append(str(path.relative_to(ROOT)))
  assert not offenders, f"modules loaded by name outside inception_zoo/tools: {offenders}"
