"""Bitwise fingerprints for refactors: a move must not change a number.

  python tests/fingerprint.py models   # seed-0 initial parameters and outputs of model families
  python tests/fingerprint.py train    # initial parameters and first 5 losses of classification CPU settings

Prints JSON; run it before and after a change, on the same machine (another CPU rounds differently, so
the hashes are not portable and this is no CI test). tests/fingerprints.json holds the values of commit
a1baf1c on the machine of the restructure (issue 18), which the restructure reproduced bit for bit."""
import hashlib
import importlib
import json
import sys
import tempfile

import jax
import numpy as np

MODELS = [("swinv2_tiny_window8_256", dict(img_size=64, window_size=4), 64), ("iformer_small", {}, 64),
          ("inception_next_atto", {}, 64), ("ese_vovnet19b_dw", {}, 64), ("inception_v3", {}, 75),
          ("resnet18", {}, 64), ("mobilenetv1_100", dict(width=0.25), 64)]
SETTINGS = ["random_pruning", "sparse_mobilenet", "swinv2", "iformer"]


def digest(tree) -> str:
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in sorted(leaves, key=lambda t: jax.tree_util.keystr(t[0])):
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.asarray(leaf).tobytes())
  return h.hexdigest()[:16]


def init_and_apply(model, x, jit: bool = True):
  """Digests of the seed-0 variables and of the output; eager and jitted applies round differently."""
  variables = jax.jit(model.init)(jax.random.key(0), x)
  apply = jax.jit(lambda v, x: model.apply(v, x)) if jit else model.apply
  return [digest(variables), digest(apply(variables, x))]


def models():
  from inception_zoo import create_model
  out = {}
  for name, options, size in MODELS:
    model = create_model(name, num_classes=10, **options)
    out[name] = init_and_apply(model, jax.random.normal(jax.random.key(1), (2, size, size, 3)))
  out["drct_tiny"] = init_and_apply(create_model("drct_tiny", upscale=2),
                                    jax.random.uniform(jax.random.key(1), (1, 16, 16, 3)), jit=False)
  vqgan = create_model("vit_vqgan", image_size=16, patch_size=4, encoder=(1, 32, 2, 64), decoder=(1, 32, 2, 64),
                       latent_dim=16, codebook_size=32, code_dim=8, l2_normalize=True)
  out["vit_vqgan"] = init_and_apply(vqgan, jax.random.uniform(jax.random.key(1), (2, 16, 16, 3)), jit=False)
  return out


def train():
  from inception_zoo.metrics import read_metrics
  from inception_zoo.train import classification
  out = {}
  for name in SETTINGS:
    module = importlib.import_module(f"experiments.{name}")
    c = module.get_config("runlocal")
    c.total_steps, c.log_every, c.checkpoint_every = 5, 1, 1000
    if name == "random_pruning":
      c.model.width = 32
    try:  # a paper's own Task lives in its project
      driver = importlib.import_module(f"inception_zoo.projects.{name}.run")
    except ModuleNotFoundError:
      driver = None
    task = getattr(driver, "TASK", classification.CLASSIFICATION)
    setup = classification.Setup(c, tempfile.mkdtemp(), task)
    init = digest(jax.device_get(setup.state.params))
    setup.checkpoints.close()
    workdir = tempfile.mkdtemp()
    classification.train_and_evaluate(c, workdir, task)
    out[name] = [init, [r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r][:5]]
  return out


if __name__ == "__main__":
  print(json.dumps({"models": models, "train": train}[sys.argv[1]]()))
