"""Matrix-free Hessian estimates (hawq.hessian) against the dense Hessian of a tiny MLP, and
against PyHessian (the HAWQ authors' library) on a PyTorch twin with the same weights."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from inception_zoo.projects.hawq import hessian


class TinyMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(6, name="fc1")(x))
    return nn.Dense(3, name="fc2")(x)


@pytest.fixture(scope="module")
def problem():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(32, 4)).astype(np.float32)
  y = rng.integers(0, 3, size=32)
  model = TinyMLP()
  params = model.init(jax.random.key(0), x)["params"]

  def loss_fn(p, batch):
    logits = model.apply({"params": p}, batch["image"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

  batches = [{"image": x[:16], "label": y[:16]}, {"image": x[16:], "label": y[16:]}]
  return loss_fn, params, batches


def _flat(tree):
  return np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)])


def test_hvp_equals_dense_hessian_times_vector(problem):
  loss_fn, params, batches = problem
  members = [n for block in hessian.blocks(params, r".*").values() for n in block]
  dense = hessian.dense_block_hessian(loss_fn, params, batches, members)
  v = jax.tree.map(lambda a: jnp.linspace(-1, 1, a.size).reshape(a.shape), params)
  hvp = jax.jit(lambda b: hessian.hvp(loss_fn, params, b, v))
  hv = jax.tree.map(lambda *a: sum(a) / len(a), *[hvp(b) for b in batches])
  # jax.hessian's flattening follows the same leaf order as tree.leaves.
  np.testing.assert_allclose(_flat(hv), dense @ _flat(v), rtol=1e-4, atol=1e-6)


def test_power_iteration_and_hutchinson_match_dense_blocks(problem):
  """Per-layer top eigenvalue within 1e-3 relative of eigvalsh's largest-magnitude eigenvalue; the
  per-layer Hutchinson trace (2,000 Rademacher samples) within 5% of the exact trace."""
  loss_fn, params, batches = problem
  block_map = hessian.blocks(params, r".*kernel")
  assert sorted(block_map) == ["fc1/kernel", "fc2/kernel"]
  eigs = hessian.top_eigenvalues(loss_fn, params, batches, block_map, jax.random.key(1), max_iters=1000,
                                 tol=1e-7, progress=False)
  tr = hessian.traces(loss_fn, params, batches, block_map, jax.random.key(2), num_samples=2000,
                      progress=False)
  for name, members in block_map.items():
    dense = hessian.dense_block_hessian(loss_fn, params, batches, members)
    w = np.linalg.eigvalsh(dense)
    top = w[np.argmax(np.abs(w))]
    assert abs(eigs[name] - top) <= 1e-3 * abs(top), (name, eigs[name], top)
    assert abs(tr[name] - np.trace(dense)) <= 0.05 * abs(np.trace(dense)), (name, tr[name], np.trace(dense))


def test_agrees_with_pyhessian_on_a_torch_twin(problem):
  """PyHessian's top eigenvalue of the whole network's Hessian (its power iteration, tolerance 1e-6)
  equals ours within 1e-3 relative, on a PyTorch MLP loaded with the same weights."""
  from pyhessian import hessian as pyhessian
  loss_fn, params, batches = problem
  twin = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
  with torch.no_grad():
    for layer, name in ((twin[0], "fc1"), (twin[2], "fc2")):
      layer.weight.copy_(torch.from_numpy(np.asarray(params[name]["kernel"]).T.copy()))
      layer.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"]).copy()))
  x = np.concatenate([b["image"] for b in batches])
  y = np.concatenate([b["label"] for b in batches])
  torch.manual_seed(0)
  h = pyhessian(twin, torch.nn.CrossEntropyLoss(), data=(torch.from_numpy(x), torch.from_numpy(y)),
                cuda=False)
  theirs = h.eigenvalues(maxIter=1000, tol=1e-6)[0][0]
  whole = {"all": [n for block in hessian.blocks(params, r".*").values() for n in block]}
  ours = hessian.top_eigenvalues(loss_fn, params, [{"image": x, "label": y}], whole, jax.random.key(3),
                                 max_iters=1000, tol=1e-7, progress=False)["all"]
  assert abs(ours - theirs) <= 1e-3 * abs(theirs), (ours, theirs)
