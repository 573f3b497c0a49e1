"""vit_vqgan's experiment driver (README.md; the recipes are experiments/vit_vqgan.py)."""
import os
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo.data import datasets
from inception_zoo.eval import fid
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.vit_vqgan import run as vqgan_run, vim, vit_vqgan, vqgan
from inception_zoo.utils import plots


def train_stage1(config, workdir, x_train, x_test):
  """Stage 1 in WORKDIR/stage1 on the digits arrays, or on the tfds images when `x_train` is None."""
  s = config.stage1
  model = vit_vqgan.ViTVQGAN(image_size=config.image_size, patch_size=config.patch_size, channels=config.channels,
                             encoder=s.size, decoder=s.size, latent_dim=s.latent_dim,
                             codebook_size=s.codebook_size, code_dim=s.code_dim)
  running = lambda state: dict(zip(("stage1/test_mse", "stage1/test_perplexity"), (
      float(np.mean(a)) for a in vqgan_run.evaluate_arrays(model, state["params"], x_test)[:2])))
  state = vqgan_run.train(s, model, os.path.join(workdir, "stage1"),
                         vqgan_run.stage1_batches(config, s, x_train), running)
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
    batches = lambda start: vqgan_run.array_batches(train_arrays, (config.batch_size,), config.seed, start)
  else:
    batches = lambda start: vqgan_run.tfds_batches(config, config.batch_size, config.seed, start)
  nll = jax.jit(lambda p, labels: vim.next_token_loss(model.apply({"params": p}, test_tokens, labels)[0], test_tokens))
  no_class = jnp.full_like(test_labels, config.num_classes)
  running = lambda state: {"test/nll_conditional": float(nll(state["params"], test_labels)),
                           "test/nll_unconditional": float(nll(state["params"], no_class))}
  state = vqgan_run.run_stage(config, os.path.join(workdir, "stage2"),
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
  inception = vqgan_run.inception_stats(config.fid)
  real = [inception(np.asarray(b["image"])[np.asarray(b["mask"]) > 0])[0]
          for b in vqgan_run.held_out(config)]
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
    first = next(vqgan_run.held_out(config))
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
