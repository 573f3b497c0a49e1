"""MIP hypernetworks (paper 10): equal to the authors' `hyperlight` given the same weights, initialised
as it is, and the paper's convergence claim on digits."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hyperlight import HyperNet as TorchHyperNet

from experiments import mip_hypernet
from inception_zoo.errors import UserError
from inception_zoo.projects.mip_hypernet.hypernet import HyperNet, leaf_names, parameter_norm
from inception_zoo.projects.mip_hypernet.run import METHODS


class Primary(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, name="head")(nn.relu(nn.Conv(4, (3, 3), name="conv")(x)).mean((1, 2)))


def pair(encoding, additive):
  """Our hypernetwork and hyperlight's, with hyperlight's weights copied into ours."""
  ours = HyperNet(Primary(), (6, 6, 2), hidden=(8, 16), encoding=encoding, additive=additive)
  variables = ours.init(jax.random.key(0), jnp.zeros((2,)))
  template = ours.template()
  names = leaf_names(template)
  shapes = {n: leaf.shape for n, leaf in zip(names, jax.tree.leaves(template))}
  torch.manual_seed(0)
  theirs = TorchHyperNet(input_shapes={"gamma": (2,)}, output_shapes=shapes, hidden_sizes=[8, 16],
                         encoding=encoding, init_independent_weights=additive)
  layers = {"fc0": theirs.backbone.block0_lin, "fc1": theirs.backbone.block1_lin, "out": theirs.backbone.output}
  params = {k: {"kernel": jnp.asarray(m.weight.detach().numpy().T), "bias": jnp.asarray(m.bias.detach().numpy())}
            for k, m in layers.items()}
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, variables["params"])
  return ours, {"params": params}, theirs, names


@pytest.mark.parametrize("encoding, additive", [("cos|sin", True), (None, False)])
def test_equal_to_hyperlight(encoding, additive):
  ours, variables, theirs, names = pair(encoding, additive)
  gamma = np.array([[0.2, 0.9], [0.0, 1.0]], np.float32)
  expected = theirs(gamma=torch.from_numpy(gamma))
  got = jax.vmap(lambda g: ours.apply(variables, g))(jnp.asarray(gamma))
  for name, leaf in zip(names, jax.tree.leaves(got)):
    np.testing.assert_allclose(leaf, expected[name].detach().numpy(), atol=1e-6, rtol=1e-5)
  x = jax.random.normal(jax.random.key(1), (5, 6, 6, 2))
  logits = ours.apply(variables, jnp.asarray(gamma[0]), x, method=HyperNet.primary_apply)
  assert logits.shape == (5, 3)


def test_initialisation_matches_hyperlight_in_distribution():
  # Same scheme, different random streams: compare each output block's standard deviation.
  ours, _, theirs, names = pair("cos|sin", True)
  kernel = ours.init(jax.random.key(3), jnp.zeros((2,)))["params"]["out"]["kernel"]
  offsets = np.cumsum([0] + [int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(ours.template())])
  torch_kernel = theirs.backbone.output.weight.detach().numpy().T
  for name, a, b in zip(names, offsets[:-1], offsets[1:]):
    if name.endswith(".bias"):
      assert not kernel[:, a:b].any() and not torch_kernel[:, a:b].any()
    else:
      np.testing.assert_allclose(kernel[:, a:b].std(), torch_kernel[:, a:b].std(), rtol=0.35)


def test_output_magnitude_follows_the_input_only_without_mip():
  # The paper's diagnosis (Sec. 3): at initialisation the baseline's theta scales with |gamma|.
  for method, spec in METHODS.items():
    hyper = HyperNet(Primary(), (6, 6, 2), **spec)
    variables = hyper.init(jax.random.key(0), jnp.zeros((1,)))
    norms = [float(parameter_norm(hyper.apply(variables, jnp.array([g])))) for g in (0.1, 0.5, 1.0)]
    if method == "baseline":
      np.testing.assert_allclose(np.array(norms) / norms[-1], [0.1, 0.5, 1.0], rtol=1e-5)
    else:
      assert max(norms) / min(norms) < 1.2, norms


def test_unknown_encoding_and_batch_norm_primary_are_one_line_errors():
  with pytest.raises(UserError, match="unknown hypernetwork encoding 'z'"):
    HyperNet(Primary(), (6, 6, 2), encoding="z").init(jax.random.key(0), jnp.zeros((1,)))

  class WithNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.BatchNorm(use_running_average=True)(x)

  with pytest.raises(UserError, match=r"only 'params'; the primary network also has \['batch_stats'\]"):
    HyperNet(WithNorm(), (4,)).init(jax.random.key(0), jnp.zeros((1,)))


def test_mip_converges_faster_and_more_stably(tmp_path):
  # Ortiz et al. 2024, Figs. 4-6: over learning rates and seeds MIP trains faster and more stably.
  # Measured (lr 3e-4 / 1e-3 / 3e-3, 5 seeds, 200 steps): steps to loss 0.5, MIP 117 / 81 / 22 vs
  # baseline never / 184 / 81; held-out loss 0.98 / 0.80 / 0.77 vs 2.15 / 1.11 / 0.82; spread over seeds
  # 0.057 / 0.008 / 0.005 vs 0.045 / 0.148 / 0.011.
  r = mip_hypernet.main(["--config=runlocal", f"--workdir={tmp_path}"])
  for lr in ("0.0003", "0.001", "0.003"):
    assert r[f"mip/lr{lr}/steps_to_target"] < 0.75 * r[f"baseline/lr{lr}/steps_to_target"], r
    assert r[f"mip/lr{lr}/test_loss"] < r[f"baseline/lr{lr}/test_loss"] - 0.03, r
  for lr in ("0.001", "0.003"):  # at 3e-4 the baseline has barely moved: its seeds agree on a poor loss
    assert r[f"mip/lr{lr}/test_loss_std"] < 0.7 * r[f"baseline/lr{lr}/test_loss_std"], r
  assert (tmp_path / "mip_convergence.png").exists()
