"""MEAL V2 ensemble distillation (Shen & Savvides, "MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1
Accuracy on ImageNet without Tricks", arXiv:2009.08453) on the classification trainer's loop.

    python -m experiments.meal_v2 --config=runlocal --workdir=workdirs/meal_v2_digits

The method (Sec. 3, and the official szq0214/MEAL-V2 `train.py`, `extensions/teacher_wrapper.py`,
`extensions/kd_loss.py`, `loss.py`):
- Frozen teachers in inference mode; their softmax probabilities averaged over the ensemble are the
  only target (Sec. 3, Eq. 1): the one-hot labels are never read by the train step.
- The similarity loss is KL(p_teachers || p_student) on the final outputs, averaged over the batch
  (Eq. 2; the official `KLLoss` computes the cross-entropy -sum p_T log p_S, which differs by the
  teachers' entropy, a constant: same gradients).
- A discriminator (models/prob_discriminator.py) scores final outputs: teacher rows are labelled
  "teacher" and student rows "student", binary cross-entropy on its two sigmoid outputs (Eq. 3,
  official `discriminatorLoss`). As in the official code its inputs are the pre-softmax outputs: the
  student's logits and the mean of the teachers' logits.
- One loss, KL + discriminator_weight x BCE, minimised by one optimizer over the student and the
  discriminator together (the official `train.py` sums both losses and steps one SGD over both
  parameter groups; no gradient reversal).
- The student starts from pre-trained weights (`config.init_from`; the discriminator starts fresh),
  SGD with momentum 0.9 and no weight decay.

Only the task differs from classification (`classification.Task`): the trained model is `Distiller`,
the student and the discriminator as two submodules, so the train state, its EMA, checkpoints,
sharding, resume, the NaN stop and pre-emption are the shared loop's. The teachers are the task's
frozen variables: loaded once from weight directories (`inception_zoo.convert --timm NAME` or a run's
workdir), laid out by the same sharding rules and passed to every step without being donated.
Evaluation is the classification eval step on the student alone (top-1, top-5, held-out NLL).
"""
import functools
import logging
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from inception_zoo import ckpt
from inception_zoo.errors import UserError
from inception_zoo.models.prob_discriminator import ProbDiscriminator
from inception_zoo.registry import create_model
from inception_zoo.train import classification
from inception_zoo.train.state import TrainState, step_rng

STUDENT, TEACHER = 0, 1  # the discriminator's two outputs


class Distiller(nn.Module):
  """The trained part of MEAL V2: the student (what `__call__` runs and evaluation scores) and the
  discriminator (`discriminate`). Initialisation creates both."""
  student: nn.Module
  discriminator: ProbDiscriminator

  init_scope = "student"  # config.init_from weights are the student's

  @property
  def num_classes(self) -> int:
    return self.student.num_classes

  @property
  def head_name(self) -> str:
    return getattr(self.student, "head_name", "head")

  def __call__(self, x, *, train: bool):
    logits, features = self.student(x, train=train)
    if self.is_initializing():
      self.discriminator(jnp.zeros_like(logits, jnp.float32))
    return logits, features

  def discriminate(self, outputs):
    return self.discriminator(outputs)


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> Distiller:
  student = classification.build_classifier(config, num_classes)
  return Distiller(student, ProbDiscriminator(student.num_classes, config.distill.discriminator_reduction))


def teacher_models(config: ml_collections.ConfigDict, num_classes: int) -> Dict[str, nn.Module]:
  if not config.teachers:
    raise UserError("config.teachers is empty: MEAL V2 needs at least one teacher")
  return {name: create_model(t.model_name, num_classes=num_classes, **t.model.to_dict())
          for name, t in sorted(config.teachers.items())}


def load_teachers(setup: "classification.Setup") -> Dict[str, Any]:
  """The `Task.frozen` of a run's Setup: `teacher_weights` for its config, classes and image shape."""
  return teacher_weights(setup.config, setup.model.num_classes, setup.image_shape)


def teacher_weights(config: ml_collections.ConfigDict, num_classes: int, image_shape) -> Dict[str, Any]:
  """{teacher name: {'params', 'batch_stats'}} as host arrays, every leaf checked against the teacher
  model (a teacher's classifier is never reset: its outputs are the target)."""
  out = {}
  for name, model in teacher_models(config, num_classes).items():
    weights = config.teachers[name].weights
    if not weights:
      raise UserError(f"config.teachers.{name}.weights is empty (a directory from "
                      f"`python -m inception_zoo.convert --timm NAME` or a run's workdir)")
    loaded, _ = ckpt.load_weights(weights)
    init = functools.partial(model.init, train=False)
    shapes = jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, *image_shape)))
    shapes = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
    try:
      out[name], _ = ckpt.merge_weights(shapes, loaded, head="")
    except UserError as e:
      raise UserError(f"teacher {name} ({config.teachers[name].model_name}, {weights}): {e}")
  return out


def teacher_targets(teachers: Dict[str, nn.Module], frozen: Dict[str, Any], images):
  """(mean of the teachers' softmax probabilities, mean of their logits), both (batch, classes)."""
  logits = [teachers[name].apply(frozen[name], images, train=False)[0].astype(jnp.float32)
            for name in sorted(teachers)]
  probs = jnp.mean(jnp.stack([jax.nn.softmax(x) for x in logits]), axis=0)
  return jax.lax.stop_gradient(probs), jax.lax.stop_gradient(jnp.mean(jnp.stack(logits), axis=0))


def kl_to_teachers(teacher_probs, student_logits):
  """KL(p_T || softmax(student_logits)) per row; zero where the student matches the target."""
  return optax.kl_divergence(jax.nn.log_softmax(student_logits.astype(jnp.float32)), teacher_probs)


def discriminator_loss(student_scores, teacher_scores):
  """Binary cross-entropy of the two sigmoid outputs, student rows labelled [1, 0] and teacher rows
  [0, 1], averaged over rows and outputs (PyTorch's BCEWithLogitsLoss as the official code uses it)."""
  scores = jnp.concatenate([student_scores, teacher_scores]).astype(jnp.float32)
  labels = jnp.concatenate([jnp.broadcast_to(jax.nn.one_hot(STUDENT, 2), student_scores.shape),
                            jnp.broadcast_to(jax.nn.one_hot(TEACHER, 2), teacher_scores.shape)])
  return optax.sigmoid_binary_cross_entropy(scores, labels).mean()


def distill_loss(model: Distiller, params, batch_stats, images, teacher_probs, teacher_logits,
                 discriminator_weight: float, rng):
  """MEAL V2's loss of one batch: (loss, (kl, discriminator loss, student logits, batch_stats)).
  Its inputs are the images and the teachers' outputs; there is no label argument."""
  variables = {"params": params, "batch_stats": batch_stats}
  (logits, _), updates = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                     rngs={"dropout": rng})
  kl = kl_to_teachers(teacher_probs, logits).mean()
  # One pass over both halves, as the official discriminatorLoss concatenates them.
  scores = model.apply(variables, jnp.concatenate([logits.astype(jnp.float32), teacher_logits]),
                       method=Distiller.discriminate)
  adversarial = discriminator_loss(scores[:len(logits)], scores[len(logits):])
  loss = kl + discriminator_weight * adversarial
  return loss, (kl, adversarial, logits, updates.get("batch_stats", {}))


def make_train_step(model: Distiller, tx, schedule, config: ml_collections.ConfigDict):
  teachers = teacher_models(config, model.num_classes)
  weight = config.distill.discriminator_weight

  def train_step(state: TrainState, batch, frozen):
    images = batch["image"]
    probs, teacher_logits = teacher_targets(teachers, frozen, images)
    grad_fn = jax.value_and_grad(distill_loss, argnums=1, has_aux=True)
    (loss, (kl, adversarial, logits, batch_stats)), grads = grad_fn(
        model, state.params, state.batch_stats, images, probs, teacher_logits, weight, step_rng(state))
    new, grad_norm = classification.update_state(state, grads, loss, batch_stats, tx, config)
    # The labels stay unread: agreement with the ensemble's top class is what training follows.
    metrics = {"loss": loss, "kl": kl, "discriminator": adversarial, "grad_norm": grad_norm,
               "teacher_agreement": jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(probs, -1)),
               "learning_rate": schedule(state.step)}
    return new, metrics

  return train_step


def summary(config, result: Dict[str, float], num_images: int, step: int) -> str:
  return (f"meal_v2 student {config.model_name} from {len(config.teachers)} teachers: held-out top-1 "
          f"{result['eval/top1']:.4f}, NLL {result['eval/loss']:.4f} ({num_images} images, step {step})")


MEAL_V2 = classification.Task(build_model, make_train_step, classification.make_eval_step, summary,
                              frozen=load_teachers)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  if not config.init_from:
    logging.warning("config.init_from is empty: the student starts from random weights, where MEAL V2 "
                    "starts from a pre-trained one")
  return classification.train_and_evaluate(config, workdir, MEAL_V2)


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  if config.mode == "train":
    return train_and_evaluate(config, workdir)
  return classification.run(config, workdir, MEAL_V2)


def teacher(model_name: str, weights: str = "", **options) -> ml_collections.ConfigDict:
  """One entry of `config.teachers`: a zoo model, its options, and the directory of its weights."""
  return ml_collections.ConfigDict(dict(model_name=model_name, model=options, weights=weights))


def base_config() -> ml_collections.ConfigDict:
  """The classification trainer's fields plus the teachers and the loss; experiments set what differs."""
  c = classification.base_config()
  c.teachers = ml_collections.ConfigDict()  # name -> teacher(...)
  c.distill = ml_collections.ConfigDict(dict(
      discriminator_weight=1.0,  # official: KL + discriminator loss, unweighted; 0 = KL alone
      discriminator_reduction=8))  # K of the official Discriminator (1000 -> 125 -> 15 -> 2)
  # Official train.py: SGD, momentum 0.9, weight decay 0 (opts.py default).
  c.optimizer.update(name="sgd", momentum=0.9, nesterov=False, weight_decay=0.0)
  return c
