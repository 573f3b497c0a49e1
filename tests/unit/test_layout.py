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
