"""The README's Layout names every package folder of the tree, and only folders that exist."""
import pathlib
import re

ROOT = pathlib.Path(__file__).parents[2]


def layout_folders():
  """Folder paths of the Layout block: each `name/` entry, nested under the entry it is indented below."""
  text = (ROOT / "README.md").read_text()
  block = text.split("## Layout", 1)[1].split("```", 2)[1]
  stack, folders = [], set()
  for line in block.splitlines():
    m = re.match(r"( *)([\w.]+)/\s", line + " ")
    if not m:
      continue
    depth = len(m.group(1)) // 2
    stack[depth:] = [m.group(2)]
    folders.add("/".join(stack))
  return folders


def tree_folders():
  packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "inception_zoo").rglob("__init__.py")}
  tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"}
  return packages | tests | {"experiments", "benchmarks", "notebooks", "tests"}


def test_layout_names_every_folder():
  named, tree = layout_folders(), tree_folders()
  assert not tree - named, f"folders missing from the README's Layout: {sorted(tree - named)}"
  assert not named - tree, f"the README's Layout names folders that do not exist: {sorted(named - tree)}"


def test_no_experiment_imports_another():
  """Experiments are recipes: what two of them share lives in experiments/common*.py or the library."""
  shared = {"common", "common_inception"}
  found = []
  for path in sorted((ROOT / "experiments").glob("*.py")):
    for m in re.finditer(r"^\s*(?:from experiments(?:\.(\w+))? import ([\w, ]+)|import experiments\.(\w+))",
                         path.read_text(), re.M):
      names = [m.group(1) or m.group(3)] if (m.group(1) or m.group(3)) else [n.strip() for n in m.group(2).split(",")]
      found += [f"{path.name} imports experiments.{n}" for n in names if n not in shared]
  assert not found, found


def documented_commands():
  """(file, experiment, --config argument or None) of every `python -m experiments.<name>` command in the
  README, the project READMEs and the experiments' docstrings."""
  docs = [ROOT / "README.md", *sorted((ROOT / "inception_zoo" / "projects").glob("*/README.md")),
          *sorted((ROOT / "experiments").glob("*.py"))]
  for path in docs:
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
      for m in re.finditer(r"python -m experiments\.(\w+)((?: +--[\w.]+(?:=\S+)?)*)", line):
        arg = re.search(r"--config=([\w]+)", m.group(2))
        yield path.relative_to(ROOT), m.group(1), arg.group(1) if arg else None


def test_documented_commands_name_real_settings():
  import importlib
  seen, bad = set(), []
  for path, name, arg in documented_commands():
    if (name, arg) in seen:
      continue
    seen.add((name, arg))
    try:
      importlib.import_module(f"experiments.{name}").get_config(arg)
    except Exception as e:  # a missing experiment or setting: the document is out of date
      bad.append(f"{path}: experiments.{name} --config={arg}: {type(e).__name__}: {e}")
  assert len(seen) > 40 and not bad, "\n".join(bad)
