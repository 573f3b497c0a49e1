"""The detection trainer on the shared step loop: one compilation for every batch, 8 data-parallel devices
equal one, exact resume, and the experiments' full settings (COCO recipes) training and evaluating end to
end on a COCO-format folder written by the test, with the real reader, pp ops, optimizer and schedule (the
networks at their tiny widths, the canvas scaled from 800 / 1333 / 1344 to 128 / 213 / 224 px); test-time
augmentation's variants, mapping back and merge, and an evaluation with it."""
import copy
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from experiments import mask_rcnn, retinanet
from inception_zoo import UserError, ckpt, sharding
from inception_zoo.data import datasets, pipeline, pp
from inception_zoo.data.detection import shapes_dataset
from inception_zoo.metrics import read_metrics
from inception_zoo.registry import create_model
from inception_zoo.train import detection
from inception_zoo.train.state import global_batch

KEYS = ("image", "image_size") + detection.TARGETS
datasets.register_dataset("shapes_tiny", lambda split, data_dir=None: shapes_dataset(
    split, size=64, num_train=32, num_test=8))


def tiny_config(experiment=mask_rcnn, steps: int = 3) -> ml_collections.ConfigDict:
  c = experiment.get_config("runlocal")
  tiny = dict(type(create_model(c.model_name)).tiny_options, frozen_bn=False)
  if c.model_name.startswith("maskrcnn"):
    tiny["paste_masks"] = False
  c.model = ml_collections.ConfigDict(tiny)
  pp = "det_resize(64, 64)|{}normalize|det_pad(64)|det_pack(8)"
  c.input.update(data="shapes_tiny", batch_size=8, eval_batch_size=8, pp_train=pp.format("det_flip|"),
                 pp_eval=pp.format(""))
  c.total_steps, c.log_every, c.checkpoint_every = steps, 1, 2
  c.schedule.update(warmup_epochs=0.0, milestones=())
  return c


def steps_of(checkpoints, mesh_data: int, steps: int = 3):
  """Losses and parameters after `steps` jitted steps with the batch split over `mesh_data` devices, how many
  times the step was traced, and the batches' numbers of instances."""
  config = tiny_config()
  config.mesh.data = mesh_data
  s = detection.Setup(config, "", checkpoints)
  train_step, traces = detection.make_train_step(s.model, s.tx, config), []

  def counted(state, batch):
    traces.append(1)
    return train_step(state, batch)

  step = jax.jit(counted, in_shardings=(s.shardings, sharding.batch_sharding(s.mesh)), donate_argnums=0)
  batches = pipeline.train_batches(s.train_data.source, s.pp_train, global_batch=8, seed=0, num_threads=1)
  state, losses, instances = s.state, [], set()
  for _ in range(steps):
    batch = next(batches)
    instances.add(int(batch["instance_valid"].sum()))
    state, metrics = step(state, global_batch(s.mesh, {k: batch[k] for k in KEYS}))
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state.params), len(traces), instances


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
  c = ckpt.Checkpoints(str(tmp_path_factory.mktemp("empty")))  # nothing to restore: fresh states
  yield c
  c.close()


@pytest.fixture(scope="module")
def setup(checkpoints):
  config = tiny_config()
  config.mesh.data = 1
  return detection.Setup(config, "", checkpoints)


def test_eight_devices_equal_one_and_the_step_compiles_once(checkpoints):
  """Data parallelism over 8 fake devices (one image each) follows the single-device run: the losses of 2
  steps to 1e-5 and the parameters after them to 2e-4 (trainable BatchNorm, so its statistics are the global
  batch's: synchronised BatchNorm). Not further: from the third step a proposal at a near tie of the top-k
  or NMS flips with the rounding (measured: losses 1e-4 apart at step 3, 2e-7 at step 2). Batches with
  different numbers of instances share one compilation: every shape is static."""
  one_losses, one_params, one_traces, instances = steps_of(checkpoints, 1, steps=2)
  eight_losses, eight_params, _, _ = steps_of(checkpoints, 8, steps=2)
  assert len(instances) > 1 and one_traces == 1 and all(np.isfinite(one_losses))
  np.testing.assert_allclose(eight_losses, one_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(eight_params), jax.tree.leaves(one_params)):
    # The stem's kernel moves most (gradient norms ~100 at lr 0.02): measured 1.3e-5 and 5.4e-5 apart on two
    # x86 machines, bound 2e-4.
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-4)


def test_resume_is_exact(tmp_path):
  """4 steps in one run equal 2 steps, a stop, and 2 more from the checkpoint: the same losses, the same
  evaluation (the sampling key and the batch are functions of the step)."""
  config = tiny_config(steps=4)
  config.mesh.data = 1
  straight = detection.train_and_evaluate(config, str(tmp_path / "straight"))
  config.total_steps = 2
  detection.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.total_steps = 4
  resumed = detection.train_and_evaluate(config, str(tmp_path / "resumed"))
  losses = lambda w: [r["train/loss"] for r in read_metrics(str(tmp_path / w)) if "train/loss" in r]
  assert losses("resumed") == losses("straight") and len(losses("straight")) == 4
  assert resumed == straight and "eval/segm/AP" in straight


def write_coco_folder(root, split: str, num: int, size: int = 150):
  """COCO-format images and instance annotations (RLE masks) of generated shapes scenes."""
  from pycocotools import mask as mask_utils
  source = shapes_dataset("train" if split == "train2017" else "test", size=size, num_train=num, num_test=num).source
  os.makedirs(root / split, exist_ok=True)
  images, annotations = [], []
  for i in range(num):
    ex = source[i]
    name = f"{i:06d}.jpg"
    Image.fromarray(ex["image"]).save(root / split / name, quality=95)
    images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
    for box, label, m in zip(ex["boxes"], ex["labels"], ex["masks"]):
      rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
      rle["counts"] = rle["counts"].decode()
      x1, y1, x2, y2 = (float(v) for v in box)
      annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label) * 10,
                          "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(m.sum()), "iscrowd": 0,
                          "segmentation": rle})
  categories = [{"id": k * 10, "name": n} for k, n in enumerate(["disc", "rectangle", "ellipse", "cross"], 1)]
  os.makedirs(root / "annotations", exist_ok=True)
  with open(root / "annotations" / f"instances_{split}.json", "w") as f:
    json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco")
  write_coco_folder(root, "train2017", 16)
  write_coco_folder(root, "val2017", 4)
  return str(root)


@pytest.mark.parametrize("experiment, arg", [(mask_rcnn, None), (retinanet, None)])
def test_full_setting_trains_evaluates_and_resumes_on_a_coco_folder(experiment, arg, coco_dir, tmp_path):
  config = experiment.get_config(arg)
  tiny = dict(type(create_model(config.model_name)).tiny_options)
  config.model.update(tiny)
  for key in ("pp_train", "pp_eval"):
    config.input[key] = (config.input[key].replace("800, 1333", "128, 213").replace("det_pad(1344)", "det_pad(224)"))
  config.input.update(data_dir=coco_dir, batch_size=8, eval_batch_size=4, num_threads=2)
  config.mesh.data, config.total_steps, config.checkpoint_every, config.log_every = 1, 2, 2, 1
  workdir = str(tmp_path / "run")
  result = detection.train_and_evaluate(config, workdir)
  assert 0.0 <= result["eval/bbox/AP"] <= 1.0 and ("eval/segm/AP" in result) == (experiment is mask_rcnn)
  config.total_steps = 3  # resumes from step 2 (the frozen stem and stage 1 are in the optimizer state)
  detection.train_and_evaluate(config, workdir)
  assert [r["step"] for r in read_metrics(workdir) if "train/loss" in r] == [1, 2, 3]


def test_init_from_loads_a_classifiers_weights_into_the_backbone_only(checkpoints, tmp_path):
  """`--config.init_from` of an ImageNet-style classifier (its own `fc` dropped) fills `backbone/body`; the
  FPN and the heads keep their fresh initialisation."""
  config = tiny_config()
  config.mesh.data = 1
  body = create_model("resnet50", num_classes=10, **config.model.body_options.to_dict())
  weights = jax.device_get(jax.jit(body.init)(jax.random.key(7), np.zeros((1, 64, 64, 3), np.float32)))
  ckpt.save_weights(str(tmp_path / "r50"), weights, {"source": "test"})
  fresh = detection.Setup(config, "", checkpoints).state
  config.init_from = str(tmp_path / "r50")
  loaded = detection.Setup(config, "", checkpoints).state
  for collection in ("params", "batch_stats"):
    ours = jax.device_get(getattr(loaded, collection))
    mine = {k: v for k, v in weights[collection].items() if k != "fc"}
    jax.tree.map(np.testing.assert_array_equal, ours["backbone"]["body"], mine)
  np.testing.assert_array_equal(jax.device_get(loaded.params["backbone"]["fpn"]["inner_blocks_0"]["kernel"]),
                                jax.device_get(fresh.params["backbone"]["fpn"]["inner_blocks_0"]["kernel"]))


def test_a_class_id_past_the_models_classes_is_a_one_line_error(tmp_path):
  config = tiny_config()
  config.mesh.data, config.num_classes = 1, 3  # the shapes have 4 classes: labels 1..4 need num_classes 5
  with pytest.raises(UserError, match=r"target class id [34] \(image \d+, instance \d+\) is outside 1..2"):
    detection.train_and_evaluate(config, str(tmp_path))


def tta(**options) -> ml_collections.ConfigDict:
  config = detection.base_config().eval.tta
  config.update(options)
  return config


def test_tta_variants_resize_flip_and_pad_each_scale():
  coco = "decode|det_resize(800, 1333)|normalize|det_pad(1344)|det_pack(100)"
  # The cap scales with the scale (mmdet's (666, 400) for (1333, 800)), the canvas with both, to 32 px.
  assert detection.tta_variants(coco, tta(scales=(400, 800), flip=True)) == [
      ("decode|det_resize(400, 666.5)|normalize|det_pad(672)|det_pack(100)", False),
      ("decode|det_resize(400, 666.5)|det_flip(1.0)|normalize|det_pad(672)|det_pack(100)", True),
      ("decode|det_resize(800, 1333)|normalize|det_pad(1344)|det_pack(100)", False),
      ("decode|det_resize(800, 1333)|det_flip(1.0)|normalize|det_pad(1344)|det_pack(100)", True)]
  # detectron2's one cap for every scale: a 400 px short side may come with a 4000 px long one.
  assert detection.tta_variants(coco, tta(scales=(400,), max_size=4000)) == [
      ("decode|det_resize(400, 4000)|normalize|det_pad(4064)|det_pack(100)", False)]
  # No cap: a landscape-only canvas scales on both axes.
  assert detection.tta_variants("det_resize(64)|det_pad((64, 96))", tta(scales=(96,))) == [
      ("det_resize(96, None)|det_pad((96, 160))", False)]
  with pytest.raises(UserError, match="needs pp_eval with one det_resize and one det_pad"):
    detection.tta_variants("decode|resize(64)|det_pad(64)", tta(flip=True))
  with pytest.raises(UserError, match="positive integer scales"):
    detection.tta_variants(coco, tta(scales=(0,)))


def test_tta_detections_map_back_to_the_original_image():
  """A perfect detector (each variant's own transformed ground truth as its detections) maps back to the
  source boxes in every variant, flipped or not, on a non-square image at three scales; a flipped variant's
  mask probabilities are mirrored back."""
  ex = shapes_dataset("test", size=(64, 48), num_test=3).source[0]
  n = len(ex["boxes"])
  variants = detection.tta_variants("det_resize(64, 64)|normalize|det_pad(64)|det_pack(8, mask_size=0)",
                                    tta(scales=(32, 40, 64), flip=True))
  assert len(variants) == 6
  for spec, flipped in variants:
    batch = {k: np.asarray(v)[None] for k, v in pp.build(spec)(dict(ex), np.random.default_rng(0)).items()}
    probs = np.arange(8 * 28 * 28, dtype=np.float32).reshape(1, 8, 28, 28)
    out = {"boxes": batch["boxes"], "scores": np.ones((1, 8), np.float32), "labels": batch["labels"],
           "valid": batch["instance_valid"], "mask_probs": probs}
    det = detection.to_original(out, batch, flipped)
    np.testing.assert_allclose(det["boxes"][0, :n], ex["boxes"], atol=1e-4)
    np.testing.assert_array_equal(det["mask_probs"], probs[..., ::-1] if flipped else probs)
    np.testing.assert_array_equal(det["labels"], out["labels"])


def test_merge_keeps_the_best_of_overlapping_same_class_boxes_and_both_classes():
  def variant(boxes, scores, labels, valid):
    return {"boxes": np.float32(boxes)[None], "scores": np.float32(scores)[None], "labels": np.int32(labels)[None],
            "valid": np.array(valid)[None], "mask_probs": np.float32(scores)[None, :, None, None] * np.ones((3, 3))}

  a = variant([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 0, 0]], [0.9, 0.3, 0], [1, 2, 0], [1, 1, 0])
  # IoU 0.82 with a's first box, the same class: suppressed; the same box in another class: kept.
  b = variant([[1, 0, 11, 10], [0, 0, 10, 10], [0, 0, 0, 0]], [0.8, 0.7, 0.95], [1, 2, 1], [1, 1, 0])
  merged = detection.merge_detections([a, b], 0.5, max_per_image=100)
  assert merged["boxes"].shape == (1, 6, 4) and merged["mask_probs"].shape == (1, 6, 3, 3)
  keep = merged["valid"][0]
  np.testing.assert_array_equal(keep, [1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(merged["scores"][0, keep], np.float32([0.9, 0.7, 0.3]))
  np.testing.assert_array_equal(merged["labels"][0, keep], [1, 2, 2])
  np.testing.assert_array_equal(merged["boxes"][0, keep], [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
  np.testing.assert_array_equal(merged["mask_probs"][0, keep, 1, 1], np.float32([0.9, 0.7, 0.3]))  # their own
  top = detection.merge_detections([a, b], 0.5, max_per_image=2)
  np.testing.assert_array_equal(top["scores"][0][top["valid"][0]], np.float32([0.9, 0.7]))


def test_evaluation_with_test_time_augmentation(setup):
  """Two scales with flips (4 variants) on the tiny Mask R-CNN: box and mask AP, and one compilation (the
  48 px scale's canvas rounds up to the 64 px one)."""
  config = copy.deepcopy(setup.config)
  config.eval.tta.update(scales=(48, 64), flip=True)
  s = copy.copy(setup)
  s.config = config
  s.eval_variants = detection.eval_variants(config.input.pp_eval, config.eval.tta, s.eval_data.source)
  s._apply = jax.jit(setup._apply.__wrapped__)  # its own compilation count
  assert len(s.eval_variants) == 4
  result = s.evaluate()
  assert {"eval/bbox/AP", "eval/segm/AP", "eval/bbox/AR@100"} <= set(result)
  assert all(-1.0 <= v <= 1.0 for v in result.values())
  assert s._apply._cache_size() == 1
