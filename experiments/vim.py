"""VIM, stage 2 of Vector-quantized Image Modeling (Yu et al., ICLR 2022), paper 15 of the zoo: a
class-conditional decoder-only transformer over ViT-VQGAN tokens, and a linear probe on its features.

Claims reproduced at toy scale (Sec. 4.1-4.2): the transformer models the raster token sequence (held-out
next-token NLL well below the entropy of the tokens' unigram distribution, and lower still with the
class token), and the average of a middle block's outputs, computed without the class, is a feature on
which a linear classifier beats chance by far. Plot: NLL per position and class-conditional samples
decoded by stage 1, in WORKDIR/vim_tokens.png.
  python -m experiments.vim --config=runlocal --workdir=workdirs/vim
CPU time here: 72 s of CPU (6 min wall on 2 cores shared with other jobs). Measured on the 360
held-out digits: held-out NLL 1.99 nats / token without the class and 1.83 with it, against 3.18 for the
unigram code frequencies; linear probe accuracy 0.79 (chance 0.10); stage 1 test MSE 0.0067, 24 of
its 64 codes in effective use (perplexity of the train tokens).

CPU setting (`runlocal`): scikit-learn's 8x8 digits (`digits_arrays`, 1,437 train / 360 test), grey
levels in [0, 1]. Stage 1: ViT-VQGAN with 2x2 patches (16 tokens), one block of width 32, 64 codes looked
up l2-normalised in 4-d, loss L_VQ + L_2, 400 Adam steps (lr 3e-3) on batches of 64, trained by
`experiments.vit_vqgan.train` in WORKDIR/stage1. Stage 2 in WORKDIR/stage2: VIM with 2 blocks of width
64 on the frozen stage-1 tokens of each batch, its start token the class or, for half the training
sequences, "no class" (our reading: one network serves the conditional samples and the label-free
probe), 600 Adam steps on batches of 64; the probe is scikit-learn's logistic regression on the
standardised features of block 1 (the second and last). Both stages run on the shared loop
(`inception_zoo.train.vqgan`): checkpoints every `checkpoint_every` steps, resumed by running again.

Full setting (`get_config()`): ViT-VQGAN-SS as in experiments/vit_vqgan.py (ImageNet through tfds
`imagenet2012`, 256 px, all four loss terms, R1), then VIM-Large (36 blocks, width 2048) on its 32x32
tokens of the same ImageNet batches (1024 images, encoded on the fly), class-conditional, 450k steps,
Adam lr 4.5e-4 with 5k warmup steps (our reading of Sec. 4.1); then FID and Inception Score of 50k
class-conditional samples (classes in turn, temperature 1) against the validation images, with the
zoo's Inception-v3 (`--config.fid.weights=DIR`; the perceptual network: `--config.stage1.perceptual.weights`).
The linear probe is evaluated in the CPU setting only.
"""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import vit_vqgan as stage1_experiment
from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.eval import fid
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter
from inception_zoo.models import vim, vit_vqgan
from inception_zoo.train import vqgan
from inception_zoo.utils import plots


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="vim_digits", data="digits", seed=0, image_size=8, channels=1, patch_size=2,
      # stage 1, trained by experiments.vit_vqgan.train (one seed)
      stage1=dict(size=(1, 32, 2, 64), latent_dim=32, codebook_size=64, code_dim=4, seeds=(0,),
                  weights=dict(l2=1.0), batch_size=64, total_steps=400, learning_rate=3e-3, warmup_steps=0,
                  log_every=200, **stage1_experiment.training_fields(full=False)),
      stage2=(2, 64, 4, 128), probe_layer=1, num_classes=10, class_dropout=0.5,
      batch_size=64, eval_batch_size=360, total_steps=600, learning_rate=3e-3, warmup_steps=0, log_every=200,
      eval_every=0, checkpoint_every=300, temperature=1.0, pp_train="", pp_eval="", num_threads=2,
      fid=stage1_experiment.fid_fields()))
  if arg == "runlocal":
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = VIM-Large on ImageNet)")
  c.update(name="vim_large_i1k", image_size=256, channels=3, patch_size=8,
           stage2=vim.SIZES["large"], probe_layer=18, num_classes=1000, class_dropout=0.0,
           batch_size=1024, eval_batch_size=250, total_steps=450_000, learning_rate=4.5e-4, warmup_steps=5000,
           log_every=1000, eval_every=10_000, checkpoint_every=5000, num_threads=32)
  stage1_experiment.imagenet_input(c, c.image_size)
  c.stage1.update(size=vit_vqgan.SIZES["small"], latent_dim=256, codebook_size=8192, code_dim=32,
                  batch_size=256, total_steps=500_000, learning_rate=1e-4, warmup_steps=5000, log_every=1000,
                  **stage1_experiment.training_fields(full=True))
  c.stage1.weights.update(vit_vqgan.LOSS_WEIGHTS)
  return c


def train_stage1(config, workdir, x_train, x_test):
  """Stage 1 in WORKDIR/stage1 on the digits arrays, or on the tfds images when `x_train` is None."""
  s = config.stage1
  model = vit_vqgan.ViTVQGAN(image_size=config.image_size, patch_size=config.patch_size, channels=config.channels,
                             encoder=s.size, decoder=s.size, latent_dim=s.latent_dim,
                             codebook_size=s.codebook_size, code_dim=s.code_dim)
  running = lambda state: dict(zip(("stage1/test_mse", "stage1/test_perplexity"), (
      float(np.mean(a)) for a in stage1_experiment.evaluate_arrays(model, state["params"], x_test)[:2])))
  state = stage1_experiment.train(s, model, os.path.join(workdir, "stage1"),
                                  stage1_experiment.stage1_batches(config, s, x_train), running)
  return model, jax.tree.map(lambda a: a[0], state["params"])


def train_stage2(config, workdir, stage1, p1, train_arrays, test_tokens, test_labels):
  """Stage 2 in WORKDIR/stage2 on the frozen stage-1 tokens of each batch (of `train_arrays`, or the
  tfds images with their labels when it is None)."""
  model = vim.VIM(codebook_size=config.stage1.codebook_size, seq_len=test_tokens.shape[1],
                  num_classes=config.num_classes, size=config.stage2, probe_layer=config.probe_layer)
  lr = config.learning_rate
  tx = optax.adam(optax.linear_schedule(0.0, lr, config.warmup_steps) if config.warmup_steps else lr)
  step = vqgan.stage2_step(model, tx, stage1, class_dropout=config.class_dropout)
  if train_arrays is not None:
    batches = lambda start: stage1_experiment.array_batches(train_arrays, (config.batch_size,), config.seed, start)
  else:
    batches = lambda start: stage1_experiment.tfds_batches(config, config.batch_size, config.seed, start)
  nll = jax.jit(lambda p, labels: vim.next_token_loss(model.apply({"params": p}, test_tokens, labels)[0], test_tokens))
  no_class = jnp.full_like(test_labels, config.num_classes)
  running = lambda state: {"test/nll_conditional": float(nll(state["params"], test_labels)),
                           "test/nll_unconditional": float(nll(state["params"], no_class))}
  state = stage1_experiment.run_stage(config, os.path.join(workdir, "stage2"),
                                      lambda: vqgan.stage2_init(model, tx, config.seed), step, batches, running,
                                      "stage 2", extra=(p1,), seed=config.seed)
  return model, state["params"]


def sample_images(config, stage1, p1, stage2, p2, labels, key):
  """Class-conditional samples for `labels`, decoded by stage 1, in [0, 1]."""
  grid = config.image_size // config.patch_size
  tokens = vim.sample(stage2, p2, labels, key, temperature=config.temperature)
  return stage1.apply({"params": p1}, tokens.reshape(-1, grid, grid), method=stage1.decode)


def sample_fid(config, stage1, p1, stage2, p2) -> Dict[str, float]:
  """FID of `fid.num_samples` class-conditional samples (classes in turn) against every held-out image,
  and their Inception Score (Table 3's columns), with the configured Inception-v3."""
  inception = stage1_experiment.inception_stats(config.fid)
  real = [inception(np.asarray(b["image"])[np.asarray(b["mask"]) > 0])[0]
          for b in stage1_experiment.held_out(config)]
  n, b = config.fid.num_samples, config.fid.batch_size
  sample = jax.jit(lambda labels, key: sample_images(config, stage1, p1, stage2, p2, labels, key))
  key = jax.random.key(config.seed + 2)
  outs = [inception(np.asarray(sample(jnp.arange(i, i + b) % config.num_classes, jax.random.fold_in(key, i))))
          for i in range(0, n, b)]
  features, probs = (np.concatenate([o[k] for o in outs])[:n] for k in (0, 1))
  return {"fid": fid.fid(np.concatenate(real), features),
          "inception_score": fid.inception_score(probs, splits=config.fid.splits)[0]}


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  digits = config.data == "digits"
  if digits:
    x_train, y_train = datasets.digits_arrays("train", flat=False)
    x_test, y_test = datasets.digits_arrays("test", flat=False)
  else:  # the running evaluations' held-out images: the first validation batch
    x_train = y_train = None
    first = next(stage1_experiment.held_out(config))
    x_test, y_test = first["image"], np.asarray(first["label"])
  stage1, p1 = train_stage1(config, workdir, x_train, x_test)
  encode = jax.jit(lambda x: stage1.apply({"params": p1}, x, method=stage1.encode).reshape(x.shape[0], -1))
  t_test = np.asarray(encode(x_test))
  stage2, p2 = train_stage2(config, workdir, stage1, p1, {"image": x_train, "label": y_train} if digits else None,
                            jnp.asarray(t_test), jnp.asarray(y_test))
  if not digits:
    result = sample_fid(config, stage1, p1, stage2, p2)
    writer.write(config.total_steps, result)
    writer.close()
    return result
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler
  t_train = np.asarray(encode(x_train))

  @jax.jit
  def evaluate(tokens, labels):
    logits, features = stage2.apply({"params": p2}, tokens, labels)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], -1)[..., 0]
    return nll, features["probe"]

  nll_cond, _ = evaluate(t_test, y_test)
  nll_free, probe_test = evaluate(t_test, jnp.full_like(y_test, config.num_classes))
  _, probe_train = evaluate(t_train, jnp.full_like(y_train, config.num_classes))
  # The unigram baseline: each test token under the train tokens' code frequencies (add-one smoothed).
  freq = (np.bincount(t_train.reshape(-1), minlength=config.stage1.codebook_size) + 1.0)
  freq /= freq.sum()
  scaler = StandardScaler().fit(np.asarray(probe_train))
  probe = LogisticRegression(max_iter=2000).fit(scaler.transform(np.asarray(probe_train)), y_train)
  result = {
      "stage1/test_mse": float(np.mean((np.asarray(stage1.apply({"params": p1}, x_test)[0]) - x_test) ** 2)),
      "stage1/code_perplexity": float(np.exp(-np.sum(np.where(freq > 0, freq * np.log(freq), 0.0)))),
      "unigram_nll": float(-np.mean(np.log(freq[t_test]))),
      "nll_unconditional": float(np.mean(nll_free)),
      "nll_conditional": float(np.mean(nll_cond)),
      "probe_accuracy": float(probe.score(scaler.transform(np.asarray(probe_test)), y_test)),
  }
  writer.write(config.total_steps, result)
  writer.close()
  images = sample_images(config, stage1, p1, stage2, p2, jnp.arange(config.num_classes), jax.random.key(config.seed))
  plot(np.asarray(nll_free).mean(0), np.asarray(nll_cond).mean(0), result, np.asarray(images),
       os.path.join(workdir, "vim_tokens.png"))
  return result


def plot(nll_free, nll_cond, result, images, path: str):
  plt = plots.pyplot()
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
  ax.plot(nll_free, "o-", label="VIM, no class")
  ax.plot(nll_cond, "s-", label="VIM, class token")
  ax.axhline(result["unigram_nll"], color="k", ls="--", label="unigram (train code frequencies)")
  ax.set_xlabel("raster position")
  ax.set_ylabel("held-out NLL (nats / token)")
  ax.legend()
  ax2.imshow(np.concatenate(list(images[..., 0]), 1), cmap="gray_r")
  ax2.set_title(f"samples for classes 0-9 (probe accuracy {result['probe_accuracy']:.2f})")
  ax2.axis("off")
  plots.save(fig, path)


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
