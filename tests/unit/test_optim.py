"""Optimizer and schedule construction: the paper's numbers, masks, clipping."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments.common_inception import inception_config
from inception_zoo import UserError
from inception_zoo.train import optim


def test_paper_schedule_decays_by_094_every_two_epochs():
  config = inception_config("inception_v4", None)
  schedule = optim.make_schedule(config, steps_per_epoch=100, total_steps=10_000)
  assert schedule(0) == pytest.approx(0.045)
  assert schedule(199) == pytest.approx(0.045)
  assert schedule(200) == pytest.approx(0.045 * 0.94)
  assert schedule(1000) == pytest.approx(0.045 * 0.94 ** 5)


def test_warmup_then_cosine():
  config = ml_collections.ConfigDict(dict(schedule=dict(
      name="cosine", base_lr=1.0, warmup_epochs=1.0, end_lr_fraction=0.0)))
  schedule = optim.make_schedule(config, steps_per_epoch=10, total_steps=110)
  assert schedule(5) == pytest.approx(0.5)
  assert schedule(10) == pytest.approx(1.0)
  assert schedule(60) == pytest.approx(0.5, abs=1e-6)
  assert schedule(110) == pytest.approx(0.0, abs=1e-6)


def test_warmup_then_poly():
  """mmseg's poly decay after a linear warm-up: base * (1 - t / T) ** 0.9, T the steps after warm-up."""
  config = ml_collections.ConfigDict(dict(schedule=dict(name="poly", base_lr=1.0, power=0.9, warmup_epochs=1.0)))
  schedule = optim.make_schedule(config, steps_per_epoch=10, total_steps=110)
  assert schedule(5) == pytest.approx(0.5)
  assert schedule(10) == pytest.approx(1.0)
  assert schedule(60) == pytest.approx(0.5 ** 0.9)
  assert schedule(110) == pytest.approx(0.0, abs=1e-6)


def test_rmsprop_is_tensorflows():
  """One step equals TF's RMSProp: ms = 0.9 * 1 + 0.1 g^2, mom = lr g / sqrt(ms + eps)."""
  config = inception_config("inception_v4", None)
  config.optimizer.weight_decay = 0.0
  config.optimizer.grad_clip = 0.0
  params = {"w": jnp.array([1.0, -2.0])}
  tx = optim.make_optimizer(config, optax.constant_schedule(0.045))
  g = {"w": jnp.array([0.5, 3.0])}
  updates, _ = tx.update(g, tx.init(params), params)
  ms = 0.9 * 1.0 + 0.1 * g["w"] ** 2
  np.testing.assert_allclose(updates["w"], -0.045 * g["w"] / np.sqrt(ms + 1.0), rtol=1e-6)


def test_weight_decay_mask_and_clipping():
  config = inception_config("inception_v4", None)
  params = {"conv": {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))}, "bn": {"scale": jnp.ones((2,))}}
  mask = optim.decay_mask(config.optimizer.wd_mask)(params)
  assert mask == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False}}
  config.optimizer.update(name="sgd", momentum=0.0, weight_decay=0.0, grad_clip=2.0)
  tx = optim.make_optimizer(config, optax.constant_schedule(1.0))
  big = jax.tree.map(lambda p: 100.0 * p, params)
  updates, _ = tx.update(big, tx.init(params), params)
  assert optax.tree.norm(updates) == pytest.approx(2.0)


def test_adam_decays_as_l2_and_adamw_decoupled():
  """'adam' adds wd * w to the gradient before the moments (torch's Adam); 'adamw' decays after them."""
  config = inception_config("inception_v4", None)
  config.optimizer.update(name="adam", weight_decay=0.1, wd_mask=r".*", grad_clip=0.0, eps=1e-8)
  params, g = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, 3.0])}
  reference = optax.chain(optax.add_decayed_weights(0.1), optax.adam(0.01))
  for name, want in (("adam", reference), ("adamw", optax.adamw(0.01, weight_decay=0.1))):
    config.optimizer.name = name
    tx = optim.make_optimizer(config, optax.constant_schedule(0.01))
    state, ref_state, p = tx.init(params), want.init(params), params
    for _ in range(3):
      updates, state = tx.update(g, state, p)
      ref_updates, ref_state = want.update(g, ref_state, p)
      np.testing.assert_allclose(updates["w"], ref_updates["w"], rtol=1e-6)
      p = optax.apply_updates(p, updates)
  # The two rules differ: with L2 the decay is normalised by Adam's second moment.
  adam = optim.make_optimizer(config.copy_and_resolve_references(), optax.constant_schedule(0.01))
  config.optimizer.name = "adam"
  l2 = optim.make_optimizer(config, optax.constant_schedule(0.01))
  assert not np.allclose(adam.update(g, adam.init(params), params)[0]["w"],
                         l2.update(g, l2.init(params), params)[0]["w"])


def test_unknown_optimizer_is_an_error():
  config = inception_config("inception_v4", None)
  config.optimizer.name = "lamb"
  with pytest.raises(UserError, match="unknown optimizer 'lamb'"):
    optim.make_optimizer(config, optax.constant_schedule(1.0))


def test_no_norm_bias_mask_on_inception_next_is_timms():
  """'no_norm_bias' decays exactly the tensors timm's param_groups_weight_decay decays in InceptionNeXt-T
  (its stem, downsampling, depthwise and MLP kernels, the head's linear weights); norms, biases and
  layer-scale gammas do not decay."""
  import timm
  from timm.optim._param_groups import param_groups_weight_decay

  from inception_zoo import create_model
  from inception_zoo.convert import timm_key
  from inception_zoo.pytree import path_str

  shapes = jax.eval_shape(create_model("inception_next_tiny").init, jax.random.key(0),
                          jnp.zeros((1, 224, 224, 3)))["params"]
  mask = optim.decay_mask("no_norm_bias")(shapes)
  ours = {timm_key("params", path_str(p)): decays
          for p, decays in jax.tree_util.tree_leaves_with_path(mask)}
  model = timm.create_model("inception_next_tiny")
  names = {id(p): n for n, p in model.named_parameters()}
  groups = param_groups_weight_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay())
  theirs = {names[id(p)]: g["weight_decay"] > 0 for g in groups for p in g["params"]}
  assert ours == theirs
  assert ours["stem.0.weight"] and ours["stages.2.blocks.4.token_mixer.dwconv_w.weight"]
  assert ours["stages.3.blocks.2.mlp.fc1.weight"] and ours["head.fc2.weight"]
  assert not any(ours[k] for k in ("stem.1.weight", "stem.1.bias", "stages.1.blocks.0.gamma",
                                   "stages.1.blocks.0.norm.weight", "stages.1.blocks.0.mlp.fc1.bias",
                                   "head.norm.weight", "head.fc2.bias"))
  # Stem and 3 downsampling convs, 18 blocks x (3 depthwise + 2 MLP kernels), 2 head linears.
  assert sum(ours.values()) == 1 + 3 + 18 * 5 + 2


def test_no_norm_bias_mask_spares_position_tables_and_tokens():
  params = {"pos_embed": jnp.zeros((1, 4, 8)), "cls_token": jnp.zeros((1, 1, 8)),
            "attn": {"relative_position_bias_table": jnp.zeros((9, 2)), "logit_scale": jnp.zeros((2, 1, 1)),
                     "cpb_mlp": {"layers_0": {"kernel": jnp.zeros((2, 8)), "bias": jnp.zeros((8,))}},
                     "qkv": {"kernel": jnp.zeros((8, 24)), "bias": jnp.zeros((24,))}},
            "norm": {"scale": jnp.zeros((8,))}}
  mask = optim.decay_mask("no_norm_bias")(params)
  decayed = {path for path, d in jax.tree_util.tree_leaves_with_path(mask) if d}
  assert [jax.tree_util.keystr(p) for p in decayed] == ["['attn']['qkv']['kernel']"]


def test_bad_decay_mask_is_a_one_line_error():
  with pytest.raises(UserError, match=r"optimizer.wd_mask '\(kernel' is neither 'no_norm_bias' nor a valid regex"):
    optim.decay_mask("(kernel")


def test_frozen_parameters_never_move_and_warmup_starts_from_a_fraction():
  """torchvision's detection recipe: the stem and stage 1 frozen (weight decay included), and a linear
  warm-up from 0.001 x the base rate, then x0.1 at each milestone."""
  config = ml_collections.ConfigDict(dict(
      optimizer=dict(name="sgd", momentum=0.9, weight_decay=1e-4, wd_mask=r".*kernel",
                     freeze=r"backbone/body/(conv1|bn1|layer1)/.*"),
      schedule=dict(name="multistep", base_lr=0.02, warmup_epochs=0.5, warmup_from=0.001, milestones=(8, 11),
                    decay_rate=0.1)))
  schedule = optim.make_schedule(config, steps_per_epoch=10, total_steps=120)
  assert schedule(0) == pytest.approx(0.02 * 0.001, rel=1e-4)
  assert schedule(5) == pytest.approx(0.02, rel=1e-5) and schedule(80) == pytest.approx(0.002, rel=1e-5)
  assert schedule(110) == pytest.approx(0.0002, rel=1e-5)
  params = {"backbone": {"body": {"conv1": {"kernel": jnp.ones((2,))}, "layer2": {"kernel": jnp.ones((2,))}}}}
  tx = optim.make_optimizer(config, schedule)
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert not np.any(updates["backbone"]["body"]["conv1"]["kernel"])
  assert np.all(updates["backbone"]["body"]["layer2"]["kernel"] < 0)
