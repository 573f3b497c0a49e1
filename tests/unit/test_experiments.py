"""Every experiment file: its CPU setting runs a few steps through the command line, and its full
(paper) setting is consistent: the model builds at the paper's resolution and the real loader's
preprocessing gives that resolution on mocked ImageNet."""
import importlib
import pathlib

import jax
import jax.numpy as jnp
import pytest
import tensorflow_datasets as tfds

from inception_zoo import UserError, create_model
from inception_zoo.data import datasets, pipeline, pp

EXPERIMENTS = sorted(p.stem for p in (pathlib.Path(__file__).parents[2] / "experiments").glob("*.py")
                     if not p.stem.startswith(("_", "common")))
# Their CPU settings run in full, through the same command line, in a claim test
# (tests/papers/test_claims*.py); a 2-step copy here would only repeat the compiles.
RUN_IN_FULL_ELSEWHERE = {"inception_residual_ablation", "inception_v4", "inception_next", "vovnet", "swinv2",
                         "iformer", "random_pruning", "sparse_mobilenet", "meal_v2", "hawq", "denseshift",
                         # the theory, graph and prototype papers: small loops of their own (no trainer fields)
                         "snnk", "temperature_moe", "neural_collapse", "dagnn", "lighthgnn", "poincare_resnet",
                         "wide_deep_ntk", "robust_cbc", "federated_recon", "mip_hypernet",
                         # self-supervised, generative, SR, distillation, NAS, XC: loops of their own
                         "pixpro", "vit_vqgan", "vim", "drct", "cda", "eas", "simq_nas", "ngame",
                         "prob_psenn", "terminator",
                         # detection and segmentation: Mask R-CNN's and DeepLabV3+'s CPU settings run in full in
                         # their claim tests, through the same command line; the trainers run in
                         # tests/unit/test_detection_trainer.py and tests/unit/test_segmentation_trainer.py
                         "mask_rcnn", "retinanet", "deeplabv3plus", "semantic_fpn"}
# Their full settings (COCO; ADE20K, VOC aug, Cityscapes) train and evaluate on folders written by those tests
# (MGD's in tests/papers/test_mgd.py).
DENSE = {"mask_rcnn", "retinanet", "deeplabv3plus", "semantic_fpn", "mgd"}
# Experiments with a loop of their own (not the classification trainer) test their full setting
# in their own test file.
# The resolution each paper trains at; the Inception papers' 299 unless listed.
PAPER_RESOLUTION = {"inception_next": 224, "vovnet": 224, "swinv2": 256, "simmim_swinv2": 192,
                    "iformer": 224, "random_pruning": 224, "sparse_mobilenet": 224, "meal_v2": 224,
                    "hawq": 224, "denseshift": 224}
CLASSIFICATION = [n for n in EXPERIMENTS if hasattr(importlib.import_module(f"experiments.{n}"), "get_config")
                  and importlib.import_module(f"experiments.{n}").get_config("runlocal").get("input")
                  and n not in DENSE]


# Their CPU settings are Inception-v4's (run in full by a claim test) with another network, whose 1/8-width
# train step alone takes minutes to compile here; the network is covered by tests/unit/test_models.py and
# the parity tests, so the command path runs at the tiny width those use.
SMALLER = {name: ["--config.model.width=0.0625", "--config.model.depths=(1, 1, 1)"]
           for name in ("inception_resnet_v1", "inception_resnet_v2")}
# MGD's CPU setting is a driver (teachers, then three students) that no claim test runs (its claim does not
# reproduce, projects/mgd/README.md): the whole command path here, the teachers' pre-training cut to 2 steps too.
SMALLER["mgd"] = ["--config.prepare.teacher_steps=2"]


@pytest.mark.parametrize("name", sorted(set(EXPERIMENTS) - RUN_IN_FULL_ELSEWHERE))
def test_cpu_setting_runs_a_few_steps(name, tmp_path):
  module = importlib.import_module(f"experiments.{name}")
  # One device: sharded steps are tested in test_sharding, and 8-way SPMD compiles far slower.
  result = module.main(["--config=runlocal", f"--workdir={tmp_path}", "--config.total_steps=2",
                        "--config.log_every=1", "--config.mesh.data=1", *SMALLER.get(name, [])])
  assert result  # every experiment returns what it measured
  assert (tmp_path / "metrics.jsonl").exists() or any(tmp_path.iterdir())


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_full_setting_is_consistent(name):
  config = importlib.import_module(f"experiments.{name}").get_config(None)
  assert config.input.batch_size % 8 == 0  # divides over an 8-way data mesh
  train_fn, eval_fn = pp.build(config.input.pp_train), pp.build(config.input.pp_eval)
  with tfds.testing.mock_data(num_examples=4):
    train = datasets.get_dataset(config.input.data, config.input.train_split)
    val = datasets.get_dataset(config.input.data, config.input.eval_split)
    shape = pipeline.preview(train.source, train_fn)["image"].shape
    size = PAPER_RESOLUTION.get(name, 299)
    assert shape == pipeline.preview(val.source, eval_fn)["image"].shape == (size, size, 3)
  model = create_model(config.model_name, num_classes=train.num_classes, **config.model.to_dict())
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
  logits, _ = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, *shape), jnp.float32))
  assert logits.shape == (2, 1000)


@pytest.mark.parametrize("name, arg, model_name", [
    ("inception_next", "atto", "inception_next_atto"), ("inception_next", "small", "inception_next_small"),
    ("inception_next", "base", "inception_next_base"), ("vovnet", "57", "vovnet57a"),
    ("vovnet", "ese19_dw", "ese_vovnet19b_dw"), ("vovnet", "ese99", "ese_vovnet99b"),
    ("swinv2", "small", "swinv2_small_window8_256"), ("swinv2", "base16", "swinv2_base_window16_256"),
    ("iformer", "base", "iformer_base"), ("iformer", "large", "iformer_large"),
    ("hawq", "resnet20_cifar10", "resnet20"), ("hawq", "inception_v3_i1k", "inception_v3")])
def test_variant_settings_build_their_model(name, arg, model_name):
  config = importlib.import_module(f"experiments.{name}").get_config(arg)
  assert config.model_name == model_name and config.input.batch_size % 8 == 0
  model = create_model(config.model_name, num_classes=1000, **config.model.to_dict())
  size = PAPER_RESOLUTION[name]
  jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_unknown_variant_is_a_one_line_error(name):
  with pytest.raises(UserError, match=r"unknown setting 'huge' \(runlocal[,;] "):
    importlib.import_module(f"experiments.{name}").get_config("huge")
