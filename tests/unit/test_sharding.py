"""Sharded training on 8 CPU devices: data-parallel and FSDP steps equal the single-device step."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from inception_zoo import UserError, create_model, sharding
from inception_zoo.data import datasets, pp
from inception_zoo.tools import sharding_plan
from inception_zoo.train import classification, optim
from inception_zoo.train.state import global_batch, init_state


def parts(config):
  model = create_model(config.model_name, num_classes=10, **config.model.to_dict())
  schedule = optim.make_schedule(config, steps_per_epoch=40, total_steps=100)
  return model, schedule, optim.make_optimizer(config, schedule)


def step_on(config, mesh_axes, initial, fsdp_min_size=2 ** 14, rules=sharding.DEFAULT_RULES):
  """One train step with the state and batch laid out on a mesh: (new state, metrics, shardings)."""
  model, schedule, tx = parts(config)
  mesh = sharding.make_mesh(mesh_axes)
  shardings = sharding.infer_shardings(initial, mesh, rules, fsdp_min_size)
  src = datasets.get_dataset("digits", "train").source
  fn = pp.build(config.input.pp_train)
  examples = [fn(src[i], None) for i in range(32)]
  batch = global_batch(mesh, {"image": np.stack([e["image"] for e in examples]),
                              "label": np.array([e["label"] for e in examples])})
  step = jax.jit(classification.make_train_step(model, tx, schedule, config),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  new, metrics = step(jax.device_put(initial, shardings), batch)
  return new, metrics, shardings


def test_data_parallel_and_fsdp_equal_single_device(digits_config):
  model, _, tx = parts(digits_config)
  state, _ = init_state(model, tx, (8, 8, 3), sharding.make_mesh({"data": 1}),
                        sharding.DEFAULT_RULES, seed=0)
  initial = jax.device_get(state)  # every layout starts from these values
  single, m1, _ = step_on(digits_config, {"data": 1}, initial)
  dp, m8, _ = step_on(digits_config, {"data": 8}, initial)
  fsdp, mf, shardings = step_on(digits_config, {"data": 2, "fsdp": 4}, initial, fsdp_min_size=1024)
  for other, metrics in ((dp, m8), (fsdp, mf)):
    np.testing.assert_allclose(metrics["loss"], m1["loss"], rtol=1e-5)
    chex.assert_trees_all_close(jax.device_get(other.params), jax.device_get(single.params),
                                atol=1e-5, rtol=1e-5)
    chex.assert_trees_all_close(jax.device_get(other.batch_stats), jax.device_get(single.batch_stats),
                                atol=1e-5, rtol=1e-5)
  # FSDP really slices the large kernels (and their optimizer moments) over the 4-way fsdp axis.
  kernel = fsdp.params["layer3"]["layers_0"]["conv1"]["kernel"]
  assert kernel.shape == (3, 3, 16, 32)
  assert kernel.sharding.spec == P(None, None, None, "fsdp")
  assert {s.data.shape for s in kernel.addressable_shards} == {(3, 3, 16, 8)}
  rows = sharding.describe(fsdp, shardings)
  sliced = [r for r in rows if "fsdp" in r[2]]
  assert any(r[0].startswith("opt_state/") for r in sliced) and any(r[0].startswith("params/") for r in sliced)
  small = fsdp.params["bn1"]["scale"]  # 8 values: replicated
  assert small.sharding.spec == P()


def test_tensor_parallel_swin_equals_single_device():
  from experiments import swinv2
  config = swinv2.get_config("runlocal")  # widths 48/96: heads and MLP units divide over 4
  model, _, tx = parts(config)
  state, _ = init_state(model, tx, (32, 32, 3), sharding.make_mesh({"data": 1}), sharding.DEFAULT_RULES,
                        seed=0)
  initial = jax.device_get(state)
  single, m1, _ = step_on(config, {"data": 1}, initial)
  tp, mt, _ = step_on(config, {"data": 2, "fsdp": 1, "model": 4}, initial,
                      rules=config.sharding_rules)
  np.testing.assert_allclose(mt["loss"], m1["loss"], rtol=1e-5)
  chex.assert_trees_all_close(jax.device_get(tp.params), jax.device_get(single.params), atol=1e-5,
                              rtol=1e-5)
  block = tp.params["layers"]["layers_1"]["blocks"]["layers_0"]
  assert block["attn"]["qkv"]["kernel"].sharding.spec == P("fsdp", "model")
  assert {s.data.shape for s in block["attn"]["qkv"]["kernel"].addressable_shards} == {(96, 72)}
  assert block["mlp"]["fc2"]["kernel"].sharding.spec == P("model", "fsdp")
  # AdamW's moments follow their parameters.
  mu = tp.opt_state
  assert any(leaf.sharding.spec == P("fsdp", "model") for leaf in jax.tree.leaves(mu)
             if getattr(leaf, "shape", None) == (96, 288))


def test_explicit_rules_and_their_errors():
  mesh = sharding.make_mesh({"data": 2, "model": 4})
  tree = {"params": {"dense": {"kernel": jnp.zeros((6, 8))}, "bias": jnp.zeros((8,))}}
  out = sharding.infer_shardings(tree, mesh, [(r".*kernel", (None, "model")), (".*", "replicate")])
  assert out["params"]["dense"]["kernel"].spec == P(None, "model")
  with pytest.raises(UserError, match=r"sharding rule '.\*kernel': dimension 6 .* does not divide over \('model',\)"):
    sharding.infer_shardings(tree, mesh, [(r".*kernel", ("model", None)), (".*", "replicate")])
  with pytest.raises(UserError, match=r"sharding rule '.\*attention.\*' matches no parameter"):
    sharding.infer_shardings(tree, mesh, [(r".*attention.*", "fsdp"), (".*", "replicate")])
  with pytest.raises(UserError, match="no sharding rule matches 'params/bias'"):
    sharding.infer_shardings(tree, mesh, [(r".*kernel", "replicate")])


def test_mesh_errors():
  with pytest.raises(UserError, match="needs 16 devices; 8 are available"):
    sharding.make_mesh({"data": 4, "fsdp": 4})
  with pytest.raises(UserError, match="does not divide 8 devices"):
    sharding.make_mesh({"data": -1, "fsdp": 3})


def test_layout_table_cli(capsys):
  def total(mesh_flags):
    sharding_plan.main(["--experiment=inception_resnet_v2",  # the full-width network: shapes only
                        *mesh_flags])
    out = capsys.readouterr().out.split("\n", 1)[1]  # the table, without the mesh line
    assert "params/conv2d_1a/conv/kernel" in out and "opt_state/" in out
    return out, int(out.strip().splitlines()[-1].split(":")[1].replace(",", ""))

  dp_out, dp_bytes = total(["--config.mesh.data=8", "--config.mesh.fsdp=1"])
  fsdp_out, fsdp_bytes = total(["--config.mesh.data=1", "--config.mesh.fsdp=8"])
  assert "'fsdp'" in fsdp_out and "'fsdp'" not in dp_out
  assert fsdp_bytes < dp_bytes / 7  # nearly all bytes sit in large kernels, sliced 8 ways


def test_layout_table_cli_errors(capsys):
  with pytest.raises(SystemExit):
    sharding_plan.main(["--experiment=inception_v4", "--config=runlocal", "--config.mesh.fsdp=3"])
  assert capsys.readouterr().err.strip() == "error: mesh {'data': -1, 'fsdp': 3} does not divide 8 devices"
