"""MEAL V2 distillation (train/distill.py): no hard labels, the KL and discriminator terms against the
official formulas, frozen teachers, the student's pre-trained start, and resume."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from experiments import meal_v2
from run_helpers import final_state
from inception_zoo import UserError, ckpt, create_model
from inception_zoo.models.prob_discriminator import ProbDiscriminator
from inception_zoo.train import classification, distill
from inception_zoo.train.state import global_batch

TINY = dict(depth=8, widths=(4, 8, 16))


def save_random_weights(directory, seed):
  model = create_model("resnet20", num_classes=10, **TINY)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 8, 8, 3)), train=False))(jax.random.key(seed))
  ckpt.save_weights(str(directory), jax.device_get(dict(variables)), {"source": f"random:{seed}"})
  return str(directory)


@pytest.fixture
def config(tmp_path):
  """The CPU setting's distillation run, small: tiny random teachers, a tiny pre-trained student."""
  c = meal_v2.get_config("runlocal")
  del c["prepare"]
  c.teachers.t0 = distill.teacher("resnet20", save_random_weights(tmp_path / "t0", 1), **TINY)
  c.teachers.t1 = distill.teacher("resnet20", save_random_weights(tmp_path / "t1", 2), **TINY)
  c.init_from = save_random_weights(tmp_path / "student", 3)
  c.input.batch_size = 32
  c.total_steps, c.log_every, c.checkpoint_every = 6, 2, 3
  c.mesh.data = 1
  return c


def one_step(config, workdir):
  """(Setup, jitted train step, frozen teachers, the first batch) as train_and_evaluate builds them."""
  s = classification.Setup(config, str(workdir), distill.MEAL_V2)
  (frozen,), _ = classification.load_frozen(s)
  step = jax.jit(distill.make_train_step(s.model, s.tx, s.schedule, config))
  batch = next(classification.pipeline.train_batches(s.train_data.source, s.pp_train, global_batch=32,
                                                     seed=0, start_batch=0, num_threads=1))
  return s, step, frozen, batch


def test_the_loss_reads_no_labels_and_a_step_ignores_them(config, tmp_path):
  assert not any("label" in p for p in inspect.signature(distill.distill_loss).parameters)
  s, step, frozen, batch = one_step(config, tmp_path)
  s.checkpoints.close()
  shuffled = dict(batch, label=(batch["label"] + 1 + np.arange(32) % 9) % 10)  # every label wrong
  a, ma = step(s.state, global_batch(s.mesh, batch), frozen)
  b, mb = step(s.state, global_batch(s.mesh, shuffled), frozen)
  assert float(ma["loss"]) == float(mb["loss"]) and float(ma["kl"]) > 0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):  # same gradients -> same new state
    np.testing.assert_array_equal(x, y)


def test_kl_is_zero_at_the_teacher_average_and_matches_the_official_loss():
  rng = np.random.default_rng(0)
  teachers = [rng.normal(size=(4, 10)) for _ in range(3)]
  probs = np.mean([jax.nn.softmax(t) for t in teachers], axis=0)
  np.testing.assert_allclose(distill.kl_to_teachers(probs, np.log(probs)), 0.0, atol=1e-6)
  student = rng.normal(size=(4, 10)).astype(np.float32)
  kl = np.asarray(distill.kl_to_teachers(probs, student))
  assert np.all(kl > 0)
  # The official KLLoss is the cross-entropy -sum p_T log p_S, batch mean: KL plus the teachers' entropy.
  official = -(torch.from_numpy(probs).float() * torch.log_softmax(torch.from_numpy(student), 1)).sum(1).mean()
  entropy = -np.sum(probs * np.log(probs), axis=1).mean()
  assert kl.mean() + entropy == pytest.approx(official.item(), rel=1e-5)


def test_discriminator_shape_sign_and_the_official_bce():
  disc = ProbDiscriminator(num_classes=1000)  # the official K = 8: 1000 -> 125 -> 15 -> 2
  x = jax.random.normal(jax.random.key(0), (6, 1000))
  variables = disc.init(jax.random.key(1), x)
  assert [variables["params"][f"fc{i}"]["kernel"].shape for i in (1, 2, 3)] == [(1000, 125), (125, 15), (15, 2)]
  scores = disc.apply(variables, x)
  assert scores.shape == (6, 2) and np.all(scores >= 0)
  with pytest.raises(UserError, match="reduction 8 leaves no hidden unit for 10 classes"):
    ProbDiscriminator(num_classes=10).init(jax.random.key(0), jnp.zeros((1, 10)))
  # Columns [student, teacher]: a discriminator that is right scores lower than one that is wrong.
  right_s, right_t = np.array([[3.0, 0.0]] * 4), np.array([[0.0, 3.0]] * 4)
  right = float(distill.discriminator_loss(right_s, right_t))
  assert right < float(distill.discriminator_loss(right_t, right_s))
  s, t = np.abs(np.random.default_rng(0).normal(size=(2, 4, 2))).astype(np.float32)
  target = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)  # official discriminatorLoss labels
  official = torch.nn.BCEWithLogitsLoss()(torch.from_numpy(np.concatenate([s, t])), target)
  assert float(distill.discriminator_loss(s, t)) == pytest.approx(official.item(), rel=1e-6)


def test_a_step_trains_student_and_discriminator_and_leaves_the_teachers(config, tmp_path):
  s, step, frozen, batch = one_step(config, tmp_path)
  s.checkpoints.close()
  loaded, _ = ckpt.load_weights(config.init_from)
  # The student starts from its pre-trained weights; the discriminator from a fresh initialisation.
  for x, y in zip(jax.tree.leaves(jax.device_get(s.state.params["student"])), jax.tree.leaves(loaded["params"])):
    np.testing.assert_array_equal(x, y)
  assert set(s.state.params) == {"student", "discriminator"}
  teachers_before = jax.device_get(frozen)
  new, metrics = step(s.state, global_batch(s.mesh, batch), frozen)
  assert float(metrics["discriminator"]) > 0 and np.isfinite(float(metrics["loss"]))
  for part in ("student", "discriminator"):
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(new.params[part])),
                                                       jax.tree.leaves(jax.device_get(s.state.params[part])))]
    assert any(changed), part
  for a, b in zip(jax.tree.leaves(jax.device_get(frozen)), jax.tree.leaves(teachers_before)):
    np.testing.assert_array_equal(a, b)  # still readable (not donated) and unchanged


def test_teacher_weights_must_fit_the_teacher(config, tmp_path):
  config.teachers.t1 = distill.teacher("resnet20", config.teachers.t1.weights, depth=8, widths=(8, 8, 16))
  with pytest.raises(UserError, match=r"teacher t1 \(resnet20, .*\): loaded '.*' has shape"):
    classification.load_frozen(classification.Setup(config, str(tmp_path), distill.MEAL_V2))


def test_resume_is_bitwise_identical(config, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  result = distill.train_and_evaluate(config, straight)
  assert 0.0 <= result["eval/top1"] <= 1.0 and result["eval/loss"] > 0
  config.total_steps = 4
  distill.train_and_evaluate(config, resumed)
  config.total_steps = 6
  distill.train_and_evaluate(config, resumed)
  a, b = final_state(straight, 6), final_state(resumed, 6)
  assert int(a["step"]) == int(b["step"]) == 6
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # The distilled student starts a plain classifier (the discriminator is left behind).
  plain = classification.base_config()
  plain.update(model_name="resnet20", init_from=straight, init_from_scope="student", total_steps=1)
  plain.model.update(TINY)
  plain.input.update(config.input.to_dict())
  plain.mesh.data = 1
  s = classification.Setup(plain, str(tmp_path / "plain"))
  s.checkpoints.close()
  for x, y in zip(jax.tree.leaves(jax.device_get(s.state.params)), jax.tree.leaves(a["ema_params"]["student"])):
    np.testing.assert_array_equal(x, y)
  plain.init_from_scope = "teacher"
  with pytest.raises(UserError, match=r"have no submodule 'teacher' \(they have discriminator, student\)"):
    classification.Setup(plain, str(tmp_path / "plain2"))
