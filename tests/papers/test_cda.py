"""Paper 25, CDA / SRe2L dataset distillation: the BatchNorm matching loss against exactly constructed
statistics and a numpy oracle, the crop-scale curriculum, the differentiable crop against torch's
crop + bilinear resize, and the digits claim."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
import torch

from experiments import cda
from inception_zoo import ckpt, create_model
from inception_zoo.projects.cda import dataset, run as driver, sre2l
from inception_zoo.errors import UserError
from inception_zoo.models.mlp import graph_mlp


class _InputBN(nn.Module):
  """BatchNorm straight on the input: its batch statistics are whatever the test builds."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    return nn.BatchNorm(use_running_average=not train)(x), None


def test_bn_loss_is_zero_exactly_at_the_running_statistics():
  model = _InputBN()
  mean, var = np.array([0.5, -1.0, 2.0], np.float32), np.array([4.0, 0.25, 1.0], np.float32)
  variables = {"batch_stats": {"BatchNorm_0": {"mean": jnp.asarray(mean), "var": jnp.asarray(var)}},
               "params": model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]}
  signs = np.where(np.arange(8) % 2, 1.0, -1.0)[:, None]  # mean 0, biased variance 1: exact
  x = jnp.asarray(mean + np.sqrt(var) * signs, jnp.float32)
  bn_loss = jax.jit(lambda z: dataset.bn_matching(model, variables, z)[1])
  assert float(bn_loss(x)) < 1e-6
  # Shifted by d and scaled by s: the loss is ||d|| + ||var (s^2 - 1)||.
  d, s = np.array([0.3, 0.0, -0.4], np.float32), 1.5
  np.testing.assert_allclose(bn_loss(x * s + d - mean * (s - 1)),
                             np.linalg.norm(d) + np.linalg.norm(var * (s * s - 1)), rtol=1e-5)
  grads = jax.jit(jax.grad(bn_loss))(x)
  assert np.all(np.isfinite(grads)) and np.allclose(grads, 0.0)  # a zero (not NaN) gradient at the optimum


def test_bn_loss_matches_a_numpy_oracle_and_reaches_the_images():
  model = dataset.BNConvNet(num_classes=10, widths=(4, 8))
  x = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))
  variables = model.init(jax.random.key(1), x, train=False)
  # The running statistics of the whole batch: the loss vanishes on it, not on another batch.
  calibrate = jax.jit(dataset.calibrate_batch_stats, static_argnums=0)
  calibrated = {"params": variables["params"], "batch_stats": calibrate(model, variables, x)}
  bn_matching = jax.jit(lambda z, w: dataset.bn_matching(model, calibrated, z, first_multiplier=w))
  assert float(bn_matching(x, 1.0)[1]) < 1e-4
  y = 0.5 * jax.random.normal(jax.random.key(2), x.shape) + 0.3
  logits, loss = bn_matching(y, 10.0)
  # Oracle: each BatchNorm's input is its convolution's output, read by Flax's capture_intermediates.
  _, state = model.apply(calibrated, y, train=False, capture_intermediates=True)
  expected = 0.0
  for i, weight in ((0, 10.0), (1, 1.0)):
    h = np.asarray(state["intermediates"][f"conv{i}"]["__call__"][0], np.float64)
    stats = calibrated["batch_stats"][f"bn{i}"]
    expected += weight * (np.linalg.norm(h.mean((0, 1, 2)) - stats["mean"])
                          + np.linalg.norm(h.var((0, 1, 2)) - stats["var"]))
  np.testing.assert_allclose(loss, expected, rtol=1e-4)
  # Two compilations of one forward pass: float32 rounding may differ in the last bits of a logit.
  np.testing.assert_allclose(logits, model.apply(calibrated, y, train=False)[0], rtol=1e-5, atol=1e-7)
  grads = jax.jit(jax.grad(lambda z: bn_matching(z, 1.0)[1]))(y)
  assert np.all(np.isfinite(grads)) and np.mean(np.abs(np.asarray(grads)) > 0) > 0.9
  with pytest.raises(UserError, match="no nn.BatchNorm"):
    mlp = graph_mlp(hidden=4, num_classes=2)
    dataset.bn_matching(mlp, mlp.init(jax.random.key(0), jnp.ones((1, 3))), jnp.ones((2, 3)))


def test_crop_scale_curriculum_endpoints():
  t = 100
  for mode in dataset.CURRICULA:
    assert float(dataset.min_crop_scale(0, t, 1.0, mode)) == pytest.approx(1.0)  # global views first
    assert float(dataset.min_crop_scale(t, t, 1.0, mode)) == pytest.approx(0.08)
    assert float(dataset.min_crop_scale(0, t, 0.0, mode)) == pytest.approx(0.08)  # milestone 0: SRe2L
  assert float(dataset.min_crop_scale(50, t, 1.0, "linear")) == pytest.approx(0.54)
  assert float(dataset.min_crop_scale(50, t, 1.0, "cosine")) == pytest.approx(0.54)
  assert float(dataset.min_crop_scale(49, t, 0.5, "step")) == 1.0
  assert float(dataset.min_crop_scale(50, t, 0.5, "step")) == pytest.approx(0.08)
  scales = np.asarray(dataset.min_crop_scale(jnp.arange(t + 1), t, 1.0, "cosine"))
  assert np.all(np.diff(scales) <= 0)  # global to local, monotone
  with pytest.raises(UserError, match="unknown curriculum 'exp'"):
    dataset.min_crop_scale(0, t, 1.0, "exp")


def test_resized_crop_equals_torch_crop_and_bilinear_resize():
  images = np.random.default_rng(0).normal(size=(2, 12, 10, 3)).astype(np.float32)
  resized_crop = jax.jit(dataset.resized_crop, static_argnums=2)
  for top, left, h, w, size in ((2, 3, 5, 4, (12, 10)), (0, 0, 12, 10, (7, 5)), (4, 1, 8, 9, (6, 13))):
    crop = torch.from_numpy(images[:, top:top + h, left:left + w]).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(crop, size=size, mode="bilinear", align_corners=False,
                                               antialias=False).permute(0, 2, 3, 1).numpy()
    got = resized_crop(jnp.asarray(images), tuple(map(jnp.float32, (top, left, h, w))), size)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_random_box_is_inside_the_image_and_whole_at_scale_one():
  keys = jax.random.split(jax.random.key(0), 200)
  draw = jax.jit(jax.vmap(lambda k, s: jnp.stack(dataset.random_box(k, 16, 16, s)), (0, None)))
  boxes = np.asarray(draw(keys, 0.08))
  top, left, h, w = boxes.T
  assert np.all((top >= 0) & (left >= 0) & (top + h <= 16) & (left + w <= 16) & (h >= 1) & (w >= 1))
  assert np.all(h * w <= 16 * 16 * 1.0 + 16) and np.mean(h * w) < 0.75 * 256
  whole = np.asarray(draw(keys, 1.0))
  np.testing.assert_array_equal(whole, np.tile([0, 0, 16, 16], (200, 1)))


def test_each_student_is_independent_of_the_others_and_hard_labels_change_only_the_loss():
  model = dataset.BNConvNet(3, (4, 4))
  sets = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 8, 8, 1)), jnp.float32)
  labels = jnp.repeat(jnp.arange(3), 2)
  teacher = model.init(jax.random.key(1), sets[0], train=False)
  train = lambda images, hard: dataset.train_students(
      model, model, teacher, images, jax.random.key(2), num_steps=3, learning_rate=1e-2,
      weight_decay=0.0, temperature=3.0, hard_labels=hard)
  both = train(sets, [None, labels])
  alone = train(sets[:1], None)  # run 0 alone: the same student as beside a hard-label run
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6), both, alone)
  soft = train(sets, None)  # run 1 on the teacher's soft labels: same init and views, other student
  head = lambda v: np.asarray(v["params"]["head"]["kernel"][1])
  assert not np.allclose(head(both), head(soft), atol=1e-4)
  np.testing.assert_allclose(soft["params"]["head"]["kernel"][0], both["params"]["head"]["kernel"][0],
                             rtol=1e-5, atol=1e-6)


def test_get_config_names_its_settings():
  assert cda.get_config("runlocal").data == "digits"
  assert cda.get_config(None).ipc == 50 and cda.get_config("i21k").ipc == 20
  with pytest.raises(UserError, match="unknown setting 'foo' \\(runlocal"):
    cda.get_config("foo")


@pytest.mark.slow
def test_cda_digits_claim(tmp_path):
  # Yin & Shen, Tables 1-3 at digits scale: CDA's curriculum recovers a better IPC-10 set than SRe2L's
  # fixed crop scale, and both teach more than random real images on their own labels. The runlocal
  # setting, measured (360 held-out digits, 3 seeds; one image = 0.003): teacher 0.981, CDA 0.955
  # (0.964 / 0.950 / 0.950), SRe2L 0.936 (0.933 / 0.942 / 0.933), random real 0.856 (0.878 / 0.853 /
  # 0.839); random real relabelled by the teacher 0.973 (reported: it beats the distilled sets here).
  r = cda.main(["--config=runlocal", f"--workdir={tmp_path}"])
  assert r["teacher/accuracy"] > 0.95
  assert min(r["sre2l/teacher_accuracy_on_set"], r["cda/teacher_accuracy_on_set"]) >= 0.98  # recovered
  assert r["cda/accuracy"] > r["sre2l/accuracy"] + 0.005, r  # measured +0.019
  assert r["sre2l/accuracy"] >= r["random_real/accuracy"] + 0.04, r  # measured +0.080
  assert r["random_real_relabel/accuracy"] > r["random_real/accuracy"], r  # the teacher's soft labels
  assert min(r[f"{m}/accuracy"] for m in driver.METHODS) > 0.80, r  # every student learned from 100 images
  assert (tmp_path / "cda_digits.png").exists()


def _full_config(tmp_path, **overrides):
  """The full pipeline at toy size: mocked CIFAR-10 (32 px images resized to 16), a 3-stage ResNet of
  width 4-8 as the squeezed teacher (random weights saved as a converted checkpoint), IPC 1 recovered in
  two batches of 5 classes for 3 steps, a 2-step student."""
  c = cda.get_config(None)
  c.update(data="tfds:cifar10", num_classes=10, image_size=16, ipc=1, recover_batch_size=5,
           recover_steps=3, jitter=1, log_every=3, teacher="resnet20", init_from=str(tmp_path / "teacher"))
  c.teacher_model = ml_collections.ConfigDict(dict(depth=8, widths=(4, 8, 8)))
  c.student.update(model_name="resnet20", total_steps=2, log_every=1, checkpoint_every=1)
  c.student.mesh = ml_collections.ConfigDict(dict(data=1))  # one device: compiles faster
  c.student.model = ml_collections.ConfigDict(dict(depth=8, widths=(4, 8, 8)))
  c.student.input.update(eval_split="test", batch_size=8, eval_batch_size=8, num_threads=1,
                         pp_train="inception_crop(16, area_min=8)|flip_lr|normalize",
                         pp_eval="decode|resize(16)|normalize|keep('image', 'label')")
  c.update(overrides)
  return c


def test_full_pipeline_recovers_in_batches_resumes_and_trains_the_student(tmp_path, monkeypatch):
  teacher = create_model("resnet20", num_classes=10, depth=8, widths=(4, 8, 8))
  variables = teacher.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
  ckpt.save_weights(str(tmp_path / "teacher"), jax.device_get(dict(variables)), {"source": "random:0"})
  config = _full_config(tmp_path)
  assert sre2l.num_batches(config.ipc, config.num_classes, config.recover_batch_size) == 2
  # The official order: blocks of classes inside, image number outside; a last block may be short.
  np.testing.assert_array_equal(sre2l.batch_labels(1, 10, 5), [5, 6, 7, 8, 9])
  np.testing.assert_array_equal(sre2l.batch_labels(5, 10, 4), [8, 9])
  np.testing.assert_array_equal(sre2l.batch_labels(6, 10, 4), [0, 1, 2, 3])
  calls, recover = [], dataset.recover

  def counted(*args, **kwargs):  # the first run is killed as batch 2 starts
    if len(calls) == 1 and kill[0]:
      raise KeyboardInterrupt
    calls.append(args[2])
    return recover(*args, **kwargs)

  kill = [True]
  monkeypatch.setattr(dataset, "recover", counted)
  with tfds.testing.mock_data(num_examples=8):
    with pytest.raises(KeyboardInterrupt):
      cda.run(config, str(tmp_path / "run"))
    directory = tmp_path / "run" / "recovered"
    (directory / "batch_00001.npz.partial").write_bytes(b"half a file")  # what a kill mid-write leaves
    first = (directory / "batch_00000.npz").stat().st_mtime_ns
    assert not (directory / "batch_00001.npz").exists()
    with pytest.raises(UserError, match="1 of 2 recovered batches"):
      sre2l.recovered_dataset("train", str(directory))
    kill[0] = False
    result = cda.run(config, str(tmp_path / "run"))
    # Resumed: only batch 1 was recovered; batch 0's file was left as it was.
    assert [x.tolist() for x in calls] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert result["recover/skipped"] == 1 and result["recover/recovered"] == 1
    assert (directory / "batch_00000.npz").stat().st_mtime_ns == first
    assert 0.0 <= result["eval/top1"] <= 1.0 and (tmp_path / "run" / "student" / "checkpoints" / "2").exists()
    train = sre2l.recovered_dataset("train", str(directory))
    assert len(train) == 10 and sorted(train.source.labels) == list(range(10))
    assert train.source.images.dtype == np.uint8 and train.source.images.shape == (10, 16, 16, 3)
    assert len(sre2l.recovered_dataset("test", str(directory))) == 8  # the source's held-out split
    # An uninterrupted run writes the same files.
    calls.clear()
    sre2l.recover_to_dir(config, str(tmp_path / "once"))
    assert len(calls) == 2
    for k in range(2):
      a, b = np.load(directory / f"batch_{k:05d}.npz"), np.load(tmp_path / "once" / f"batch_{k:05d}.npz")
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])
    with pytest.raises(UserError, match="another recover_steps"):
      sre2l.recover_to_dir(_full_config(tmp_path, recover_steps=4), str(directory))


def test_i21k_setting_reads_its_image_folder(tmp_path):
  # ImageNet-21K-P's layout at toy size: the toy pipeline above with the i21k setting's data fields.
  from PIL import Image
  teacher = create_model("resnet20", num_classes=10, depth=8, widths=(4, 8, 8))
  variables = teacher.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
  ckpt.save_weights(str(tmp_path / "teacher"), jax.device_get(dict(variables)), {"source": "random:0"})
  i21k = cda.get_config("i21k")
  root = tmp_path / "imagenet21k_resized"
  for c in range(10):
    for split in ("imagenet21k_train", i21k.student.input.eval_split):
      (root / split / f"n{c:08d}").mkdir(parents=True)
      Image.fromarray(np.full((20, 20, 3), 25 * c, np.uint8)).save(root / split / f"n{c:08d}" / "0.png")
  config = _full_config(tmp_path, data=i21k.data, data_dir=str(root))
  config.student.input.eval_split = i21k.student.input.eval_split
  result = cda.run(config, str(tmp_path / "run"))
  assert result["recover/recovered"] == 2 and 0.0 <= result["eval/top1"] <= 1.0
  assert len(sre2l.recovered_dataset(i21k.student.input.eval_split, str(tmp_path / "run" / "recovered"))) == 10
