"""Every registered image backbone: forward and backward at a tiny size, feature maps, and input errors;
every model module registers its models, filterable by task."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_zoo import UserError, create_model, list_models, registry
from inception_zoo.pytree import path_str

MODELS = list_models(task="classification")


def tiny(name, **kwargs):
  """The model class's `tiny_options` (e.g. 1/16 width, one block per stage): the same code paths as
  the paper's sizes, compiled in seconds. Returns (model, smallest valid input size)."""
  cls = type(create_model(name))
  return create_model(name, **cls.tiny_options, **kwargs), cls.min_size


def distinct_tiny_models():
  """One name per distinct tiny network: names that differ only in depth or width (resnet50 / 101 /
  152, the Swin V2 windows) become the same network under `tiny_options`, so one test covers them."""
  first = {}
  for name in MODELS:
    model, _ = tiny(name, num_classes=7, drop_rate=0.2)
    first.setdefault((type(model).__name__, repr(model)), name)
  return sorted(first.values())


def fast_jit(fn):
  """`jax.jit` compiled once (for the first call's shapes) without the CPU backend's LLVM optimisations: these
  graphs run once or twice, and those passes are most of their compile time (Inception-v3's tiny gradient:
  48 s -> 14 s). The checks here compare a function with itself, never with other code's rounding."""
  jitted, compiled = jax.jit(fn), []

  def call(*args):
    if not compiled:
      compiled.append(jitted.lower(*args).compile({"xla_backend_optimization_level": 0}))
    return compiled[0](*args)
  return call


def init(model, x):
  return fast_jit(model.init)(jax.random.key(1), x)  # eager init would compile op by op


def test_registry_lists_the_paper_models():
  assert {"inception_v4", "inception_resnet_v1", "inception_resnet_v2",
          "inception_resnet_v2_paper"} <= set(MODELS)
  assert {f"inception_next_{v}" for v in ("atto", "tiny", "small", "base")} <= set(MODELS)
  assert {"vovnet39a", "vovnet57a", "ese_vovnet19b_dw", "ese_vovnet39b", "ese_vovnet57b",
          "ese_vovnet99b"} <= set(MODELS)
  assert {f"swinv2_{v}_window{w}_256" for v in ("tiny", "small", "base") for w in (8, 16)} <= set(MODELS)
  assert {"iformer_small", "iformer_base", "iformer_large"} <= set(MODELS)
  # The compression papers' networks (issue 5)
  assert {"resnet18", "resnet20", "resnet50", "wide_resnet50_2", "inception_v3", "mobilenetv1_100",
          "mobilenetv2_100", "efficientnet_b0", "senet154", "resnet152s"} <= set(MODELS)


def test_every_model_module_registers_and_tasks_filter():
  folder = pathlib.Path(registry.__file__).parent / "models"
  modules = {f"inception_zoo.models.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}
  # models/detection/ and models/segmentation/: the networks' files (FPN, RPN, RoI heads, losses and the
  # segmentation heads' common units are their building blocks)
  modules |= {"inception_zoo.models.detection.rcnn", "inception_zoo.models.detection.retinanet",
              "inception_zoo.models.segmentation.deeplab", "inception_zoo.models.segmentation.semantic_fpn"}
  registered = {registry._MODELS[n].__module__ for n in list_models()}
  assert modules <= registered, f"model modules that register nothing: {sorted(modules - registered)}"
  # the rest are the projects' networks, which the package registers too (inception_zoo/__init__.py)
  assert all(m.startswith("inception_zoo.projects.") for m in registered - modules), sorted(registered - modules)
  by_task = {t: set(list_models(task=t)) for t in registry.TASKS}
  assert all(by_task.values()), {t: len(v) for t, v in by_task.items()}
  assert set().union(*by_task.values()) == set(list_models())
  assert "drct" in by_task["super-resolution"] and "drct" not in by_task["classification"]
  with pytest.raises(UserError, match="unknown task 'clasification'; did you mean 'classification'"):
    list_models(task="clasification")


@pytest.mark.parametrize("name", distinct_tiny_models())
def test_forward_backward_tiny(name):
  model, size = tiny(name, num_classes=7, drop_rate=0.2)
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  variables = init(model, x)
  assert type(model).head_name in variables["params"]  # the module a head reset replaces

  batch_stats = variables.get("batch_stats", {})  # none in BatchNorm-free models (Swin V2)

  def loss(params):
    (logits, feats), _ = model.apply({"params": params, "batch_stats": batch_stats}, x,
                                     train=True, mutable=["batch_stats"],
                                     rngs={"dropout": jax.random.key(2)})
    return jnp.sum(logits ** 2) + sum(jnp.sum(f) for f in feats.values()) * 1e-3, (logits, feats)

  grads, (logits, feats) = fast_jit(jax.grad(loss, has_aux=True))(variables["params"])
  assert logits.shape == (2, 7)
  assert np.all(np.isfinite(logits))
  maps = [k for k in feats if k != "pre_logits"]
  assert "pre_logits" in feats and maps and all(k[0] == "C" and k[1:].isdigit() for k in maps)
  assert maps == sorted(maps)
  sizes = [feats[k].shape[1] for k in maps]
  assert sizes == sorted(sizes, reverse=True)  # C<i> has nominal stride 2^i
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)), path_str(path)
    assert np.any(g != 0), f"{name}: no gradient reaches {path_str(path)}"


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_eval_is_deterministic_and_train_uses_dropout(name):
  model, size = tiny(name, num_classes=5, drop_rate=0.5)
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  v = init(model, x)
  evaluate = fast_jit(lambda v: model.apply(v, x)[0])  # jitted: op-by-op the full graph takes minutes
  train = fast_jit(lambda v, key: model.apply(v, x, train=True, mutable=["batch_stats"],
                                             rngs={"dropout": key})[0][0])
  np.testing.assert_array_equal(evaluate(v), evaluate(v))
  c, d = train(v, jax.random.key(3)), train(v, jax.random.key(4))
  assert not np.allclose(c, d)


@pytest.mark.parametrize("name", ["inception_next_atto", "ese_vovnet39b", "swinv2_tiny_window8_256",
                                  "resnet18"])
def test_stochastic_depth_only_in_training(name):
  # Dropout is off (these families default to drop_rate=0), so only drop_path draws random numbers.
  model, size = tiny(name, num_classes=5, drop_path_rate=0.5)
  x = jax.random.normal(jax.random.key(0), (4, size, size, 3))
  v = init(model, x)
  train = fast_jit(lambda v, key: model.apply(v, x, train=True, mutable=["batch_stats"],
                                             rngs={"dropout": key})[0][0])
  # One key gives one output, bit for bit; another key drops other branches. Exact comparison, as
  # families with layer scale (InceptionNeXt: 1e-6 at init) change the logits by ~1e-7 per branch.
  np.testing.assert_array_equal(train(v, jax.random.key(3)), train(v, jax.random.key(3)))
  assert not np.array_equal(train(v, jax.random.key(3)), train(v, jax.random.key(4)))
  logits, _ = fast_jit(model.apply)(v, x)  # evaluation needs no 'dropout' RNG: nothing is dropped
  assert np.all(np.isfinite(logits))


def test_headless_model_returns_pooled_features():
  model, size = tiny("inception_v4", num_classes=0)
  x = jnp.zeros((1, size, size, 3))
  out, feats = fast_jit(model.apply)(init(model, x), x)  # op by op, the full graph takes most of a minute
  assert out.shape == (1, feats["C5"].shape[-1])
  np.testing.assert_array_equal(out, feats["pre_logits"])


def test_unknown_model_suggests_the_closest():
  with pytest.raises(UserError, match=r"unknown model 'inception_v5'; did you mean 'inception_v4'\?"):
    create_model("inception_v5")


def test_unknown_model_option_suggests_the_closest():
  with pytest.raises(UserError, match=r"has no option 'widht'; did you mean 'width'\?"):
    create_model("inception_v4", widht=0.5)


@pytest.mark.parametrize("shape, message", [
    ((75, 75, 3), r"expects images of shape \(batch, height, width, channels\); got an array of shape \(75, 75, 3\)"),
    ((1, 64, 64, 3), r"needs images of at least 75x75 pixels .* got 64x64"),
])
def test_bad_image_shape_is_a_one_line_error(shape, message):
  model = create_model("inception_resnet_v2")
  with pytest.raises(UserError, match=message):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
