"""VIM, stage 2 of Vector-quantized Image Modeling (Yu et al., ICLR 2022), paper 15 of the zoo: a
class-conditional decoder-only transformer over ViT-VQGAN tokens, and a linear probe on its features.

Claims reproduced at toy scale (Sec. 4.1-4.2): the transformer models the raster token sequence (held-out
next-token NLL well below the entropy of the tokens' unigram distribution, and lower still with the
class token), and the average of a middle block's outputs, computed without the class, is a feature on
which a linear classifier beats chance by far. Plot: NLL per position and class-conditional samples
decoded by stage 1, in WORKDIR/vim_tokens.png.
  python -m experiments.vim --config=runlocal --workdir=workdirs/vim
CPU time here: 54 s of CPU (14 min wall on 2 cores shared with 7 other jobs). Measured on the 360
held-out digits: held-out NLL 1.98 nats / token without the class and 1.80 with it, against 3.19 for the
unigram code frequencies; linear probe accuracy 0.81 (chance 0.10); stage 1 test MSE 0.0065, 24 of
its 64 codes in effective use (perplexity of the train tokens).

CPU setting (`runlocal`): scikit-learn's 8x8 digits (`digits_arrays`, 1,437 train / 360 test), grey
levels in [0, 1]. Stage 1: ViT-VQGAN with 2x2 patches (16 tokens), one block of width 32, 64 codes looked
up l2-normalised in 4-d, loss L_VQ + L_2, 400 Adam steps (lr 3e-3) on batches of 64, trained by
`experiments.vit_vqgan.train`. Stage 2: VIM with 2 blocks of width 64, its start token the class or, for
half the training sequences, "no class" (our reading: one network serves the conditional samples and the
label-free probe), 600 Adam steps on batches of 64; the probe is scikit-learn's logistic regression on
the standardised features of block 1 (the second and last).

Full setting (`get_config()`, config only: its ImageNet trainer is not implemented here): VIM-Large
(36 blocks, width 2048) on the 32x32 tokens of ViT-VQGAN-SS at 256 px, 8192 codes, class-conditional,
batch 1024, 450k steps, Adam lr 4.5e-4 with warmup (our reading of Sec. 4.1).
"""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import common
from experiments import vit_vqgan as vit_vqgan_experiment
from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.metrics import MetricWriter
from inception_zoo.models import vim, vit_vqgan
from inception_zoo.train.fullbatch import fit
from inception_zoo.utils import plots


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="vim_digits", data="digits", seed=0, image_size=8, channels=1, patch_size=2,
      # stage 1, trained by experiments.vit_vqgan.train (one seed)
      stage1=dict(size=(1, 32, 2, 64), latent_dim=32, codebook_size=64, code_dim=4, seeds=(0,),
                  weights=dict(l2=1.0), batch_size=64, total_steps=400, learning_rate=3e-3, warmup_steps=0,
                  log_every=200),
      stage2=(2, 64, 4, 128), probe_layer=1, num_classes=10, class_dropout=0.5,
      batch_size=64, total_steps=600, learning_rate=3e-3, log_every=200))
  if arg == "runlocal":
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = VIM-Large on ImageNet)")
  c.update(name="vim_large_i1k", data="imagenet2012", image_size=256, channels=3, patch_size=8,
           stage2=vim.SIZES["large"], probe_layer=18, num_classes=1000, class_dropout=0.0,
           batch_size=1024, total_steps=450_000, learning_rate=4.5e-4, log_every=1000)
  c.stage1.update(size=vit_vqgan.SIZES["small"], latent_dim=256, codebook_size=8192, code_dim=32,
                  batch_size=256, total_steps=500_000, learning_rate=1e-4, warmup_steps=5000, log_every=1000)
  c.stage1.weights.update(vit_vqgan.LOSS_WEIGHTS)
  return c


def train_stage1(config, x_train, writer):
  s = config.stage1
  model = vit_vqgan.ViTVQGAN(image_size=config.image_size, patch_size=config.patch_size, channels=config.channels,
                             encoder=s.size, decoder=s.size, latent_dim=s.latent_dim,
                             codebook_size=s.codebook_size, code_dim=s.code_dim)
  params = vit_vqgan_experiment.train(s, model, x_train, writer, prefix="stage1/")
  return model, jax.tree.map(lambda a: a[0], params)


def train_stage2(config, tokens, labels, writer):
  model = vim.VIM(codebook_size=config.stage1.codebook_size, seq_len=tokens.shape[1], num_classes=config.num_classes,
                  size=config.stage2, probe_layer=config.probe_layer)
  tokens, labels = jnp.asarray(tokens), jnp.asarray(labels)

  def loss_fn(p, key):
    k1, k2 = jax.random.split(key)
    i = jax.random.randint(k1, (config.batch_size,), 0, tokens.shape[0])
    drop = jax.random.bernoulli(k2, config.class_dropout, (config.batch_size,))
    y = jnp.where(drop, config.num_classes, labels[i])
    return vim.next_token_loss(model.apply({"params": p}, tokens[i], y)[0], tokens[i])

  params = model.init(jax.random.key(config.seed), tokens[:1], labels[:1])["params"]
  params, _ = fit(loss_fn, params, optax.adam(config.learning_rate), config.total_steps,
                  key=jax.random.key(config.seed + 1), log_every=config.log_every, writer=writer,
                  prefix="stage2/", progress=True)
  return model, params


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  common.require_cpu_data(config, "digits")
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler
  x_train, y_train = datasets.digits_arrays("train", flat=False)
  x_test, y_test = datasets.digits_arrays("test", flat=False)
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  stage1, p1 = train_stage1(config, x_train, writer)
  encode = jax.jit(lambda x: stage1.apply({"params": p1}, x, method=stage1.encode).reshape(x.shape[0], -1))
  t_train, t_test = np.asarray(encode(x_train)), np.asarray(encode(x_test))
  stage2, p2 = train_stage2(config, t_train, y_train, writer)

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
  samples = vim.sample(stage2, p2, jnp.arange(config.num_classes), jax.random.key(config.seed), temperature=1.0)
  grid = config.image_size // config.patch_size
  images = stage1.apply({"params": p1}, samples.reshape(-1, grid, grid), method=stage1.decode)
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
