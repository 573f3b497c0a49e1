"""vit_vqgan's experiment driver (README.md; the recipes are experiments/vit_vqgan.py)."""
import itertools
import os
from typing import Callable, Dict, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_zoo import ckpt
from inception_zoo.data import datasets, pipeline, pp
from inception_zoo.errors import UserError
from inception_zoo.eval import fid
from inception_zoo.metrics import MetricWriter
from inception_zoo.projects.vit_vqgan import vit_vqgan, vqgan
from inception_zoo.registry import create_model
from inception_zoo.train import loop
from inception_zoo.utils import plots


def training_fields(full: bool) -> dict:
  """Stage 1's optimisation, discriminator and perceptual-network fields (also VIM's `stage1`)."""
  return dict(
      checkpoint_every=5000 if full else 200, eval_every=10_000 if full else 0,
      r1_gamma=10.0,  # StyleGAN's R1 weight (our choice: the paper gives none)
      disc_widths=(128, 256, 512, 512, 512, 512) if full else (16, 32),
      # LPIPS's network: a zoo model with C1..C5 feature taps and ImageNet-normalised inputs, its weights
      # a `save_weights` directory (e.g. timm's resnet50 via inception_zoo.convert).
      perceptual=dict(model="resnet50", options={}, weights="", taps=("C1", "C2", "C3", "C4", "C5")))


def fid_fields() -> dict:
  """The Inception-v3 of FID / IS (`eval/fid.py`): a `save_weights` directory of the zoo's inception_v3."""
  return dict(model="inception_v3", options={}, weights="", image_size=299, batch_size=100, num_samples=50_000,
              splits=10)


def imagenet_input(c: ml_collections.ConfigDict, size: int):
  """ImageNet through tfds: random `size` crops of images resized to `size` on the short side, flipped,
  in [0, 1] (the model's range); held out: the central crop of the validation images."""
  c.update(data="tfds:imagenet2012",
           pp_train=f"decode|resize_small({size})|random_crop({size})|flip_lr|value_range(0, 1)|keep('image', 'label')",
           pp_eval=f"decode|resize_small({size})|central_crop({size})|value_range(0, 1)|keep('image', 'label')")


def sample_image_crops(config, split: str, seed: int) -> np.ndarray:
  """Random `crop`-pixel crops in [0, 1] of the downscaled sample photographs: from the left 3/4 of each
  image for "train", the right 1/4 for "test"."""
  from sklearn.datasets import load_sample_images
  f, n = config.downscale, config.num_train if split == "train" else config.num_test
  rng = np.random.default_rng(seed)
  crops = []
  for k, image in enumerate(load_sample_images().images):
    h, w = image.shape[0] // f * f, image.shape[1] // f * f
    small = image[:h, :w].reshape(h // f, f, w // f, f, 3).mean((1, 3)) / 255.0
    cut = small.shape[1] * 3 // 4
    part = small[:, :cut] if split == "train" else small[:, cut:]
    count = n // 2 if k == 0 else n - n // 2
    ys = rng.integers(0, part.shape[0] - config.crop + 1, count)
    xs = rng.integers(0, part.shape[1] - config.crop + 1, count)
    crops += [part[y:y + config.crop, x:x + config.crop] for y, x in zip(ys, xs)]
  return np.stack(crops).astype(np.float32)


def array_batches(arrays: Dict[str, np.ndarray], shape, seed: int, start: int) -> Iterator[Dict[str, np.ndarray]]:
  """Rows of in-memory `arrays` for steps start+1, start+2, ...: each of the shape[0] row groups of step
  i is drawn uniformly with its own key split from fold_in(key(seed), i - 1), so a resumed run reads
  what an uninterrupted one would (and the CPU settings read what `fullbatch.fit` gave them)."""
  n = len(next(iter(arrays.values())))
  draw = jax.jit(lambda step: jax.vmap(lambda k: jax.random.randint(k, shape[1:], 0, n))(
      jax.random.split(jax.random.fold_in(jax.random.key(seed), step), shape[0])))
  for step in itertools.count(start + 1):
    rows = np.asarray(draw(step - 1))
    yield {k: v[rows] for k, v in arrays.items()}


def tfds_batches(c, batch_size: int, seed: int, start: int) -> Iterator[Dict[str, np.ndarray]]:
  """Training batches start+1, ... of `c.data` (a tfds dataset) after `c.pp_train`."""
  ds = datasets.get_dataset(c.data, "train")
  return pipeline.train_batches(ds.source, pp.build(c.pp_train), global_batch=batch_size, seed=seed,
                                start_batch=start, num_threads=c.num_threads)


def held_out(c, split: str = "validation") -> Iterator[Dict[str, np.ndarray]]:
  """Every held-out example of the tfds dataset once, after `c.pp_eval` (`mask` 0 on padding)."""
  ds = datasets.get_dataset(c.data, split)
  return pipeline.eval_batches(ds.source, pp.build(c.pp_eval), global_batch=c.eval_batch_size,
                               num_threads=c.num_threads)


def load_network(c, what: str):
  """(model, variables) of a zoo network with converted weights: `c.model`, `c.options`, `c.weights`."""
  if not c.weights:
    raise UserError(f"{what} needs weights for {c.model} (a save_weights directory, e.g. from "
                    f"inception_zoo.convert): set --config.{what}.weights")
  model = create_model(c.model, **c.options.to_dict())
  variables, _ = ckpt.load_weights(c.weights)
  x = jnp.zeros((1, model.min_size, model.min_size, 3))
  expected = jax.tree.map(lambda a: a.shape, jax.eval_shape(model.init, jax.random.key(0), x))
  if jax.tree.map(np.shape, variables) != expected:
    raise UserError(f"{what} weights in {c.weights} do not fit {c.model} with options {c.options.to_dict()}")
  return model, variables


def perceptual_fn(c) -> Callable:
  """LPIPS's form (`vit_vqgan.perceptual_loss`) on the taps of the configured network, whose inputs are
  ImageNet-normalised; the images are in [0, 1]."""
  model, variables = load_network(c, "perceptual")
  mean, std = jnp.asarray(pp.IMAGENET_MEAN), jnp.asarray(pp.IMAGENET_STD)
  features = lambda x: model.apply(variables, (x - mean) / std, train=False)[1]
  return lambda x, y: vit_vqgan.perceptual_loss(features, x, y, taps=tuple(c.taps))


def optimizer(s) -> optax.GradientTransformation:
  """Adam (b1 0.9, b2 0.99), linear warm-up over `warmup_steps` (Sec. 4.1 as we read it)."""
  lr = optax.linear_schedule(0.0, s.learning_rate, s.warmup_steps) if s.warmup_steps else s.learning_rate
  return optax.adam(lr, b2=0.99)


def train(s, model: vit_vqgan.ViTVQGAN, workdir: str, batches: Callable[[int], Iterator],
          evaluate: Callable[[dict], Dict[str, float]], desc: str = "stage 1"):
  """Trains one ViT-VQGAN per seed in `s.seeds` side by side in `workdir`, resuming its newest
  checkpoint; `batches(start)` yields (seeds, batch, H, W, C) images in [0, 1] for steps start+1, ...
  Returns the final state (every leaf stacked over the seeds)."""
  tx = optimizer(s)
  disc = vit_vqgan.Discriminator(tuple(s.disc_widths)) if s.weights.get("adversarial") else None
  d_tx = optimizer(s) if disc else None
  step = vqgan.over_seeds(vqgan.stage1_step(
      model, tx, dict(s.weights), disc=disc, disc_tx=d_tx, r1_gamma=s.r1_gamma,
      perceptual_fn=perceptual_fn(s.perceptual) if s.weights.get("perceptual") else None))
  init = lambda: jax.vmap(lambda seed: vqgan.stage1_init(model, tx, seed, disc=disc, disc_tx=d_tx))(
      jnp.asarray(s.seeds))
  return run_stage(s, workdir, init, step, batches, evaluate, desc, seeds=list(s.seeds))


def run_stage(s, workdir: str, init: Callable, step: Callable, batches: Callable[[int], Iterator],
              evaluate: Callable, desc: str, extra: tuple = (), **input_setting):
  """`loop.run_steps` in `workdir` from its newest checkpoint (or `init()`) to `s.total_steps`."""
  state, _ = loop.run_in_workdir(workdir, init, step, batches, config=s, total_steps=s.total_steps,
                                 settings=dict(batch_size=s.batch_size, **input_setting), evaluate=evaluate,
                                 log_every=s.log_every, eval_every=s.eval_every,
                                 checkpoint_every=s.checkpoint_every, desc=desc, extra=extra)
  return state


def make_model(config, factorised: bool) -> vit_vqgan.ViTVQGAN:
  return vit_vqgan.ViTVQGAN(
      image_size=config.crop, patch_size=config.patch_size, encoder=config.encoder, decoder=config.decoder,
      latent_dim=config.latent_dim, codebook_size=config.codebook_size,
      code_dim=config.factorised_dim if factorised else None, l2_normalize=factorised)


def reconstruct(model):
  """A compiled (params, images) -> (per-image MSE, reconstructions, code indices)."""
  @jax.jit
  def apply(params, x):
    recon, aux = model.apply({"params": params}, x)
    return jnp.mean((recon - x) ** 2, (1, 2, 3)), recon, aux["indices"]
  return apply


def code_stats(counts: np.ndarray):
  """(perplexity, fraction used) of code counts: `layers.vq.codebook_perplexity` of their indices."""
  p = counts / max(counts.sum(), 1)
  return float(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0])))), float(np.mean(counts > 0))


def evaluate_arrays(model, stacked_params, x_test):
  """Per seed on in-memory test images: MSE, perplexity of all test tokens, reconstructions, indices."""
  apply = reconstruct(model)
  out = [apply(jax.tree.map(lambda a: a[s], stacked_params), jnp.asarray(x_test))
         for s in range(len(jax.tree.leaves(stacked_params)[0]))]
  mse = np.array([float(np.mean(o[0])) for o in out])
  stats = [code_stats(np.bincount(np.asarray(o[2]).ravel(), minlength=model.codebook_size)) for o in out]
  return mse, np.array([p for p, _ in stats]), np.array([u for _, u in stats]), [np.asarray(o[1]) for o in out], \
      [np.asarray(o[2]) for o in out]


def inception_stats(c_fid):
  """features(images in [0, 1]) -> (pool features, class probabilities) of the configured Inception-v3."""
  net, variables = load_network(c_fid, "fid")
  return lambda images: fid.inception_outputs(net, variables, images, batch_size=c_fid.batch_size,
                                                  size=c_fid.image_size)


def evaluate_held_out(config, model, params, batches) -> Dict[str, float]:
  """One model over every held-out image: MSE, code perplexity and usage, and the reconstruction FID
  (reconstructions against the originals, Table 2's rFID) with the configured Inception-v3."""
  apply, inception = reconstruct(model), inception_stats(config.fid)
  counts, se, n = np.zeros(model.codebook_size), 0.0, 0
  real, fake = [], []
  for batch in batches:
    keep = np.asarray(batch["mask"]) > 0
    mse, recon, indices = (np.asarray(a)[keep] for a in apply(params, jnp.asarray(batch["image"])))
    se, n = se + float(mse.sum()), n + int(keep.sum())
    counts += np.bincount(indices.ravel(), minlength=model.codebook_size)
    real.append(inception(np.asarray(batch["image"])[keep])[0])
    fake.append(inception(recon)[0])
  perplexity, usage = code_stats(counts)
  return {"test/mse": se / n, "test/perplexity": perplexity, "test/usage": usage,
          "test/rfid": fid.fid(np.concatenate(real), np.concatenate(fake))}


def stage1_batches(c, s, x_train=None):
  """batches(start) for `train` (`s` its settings): rows of in-memory images (a batch per seed), or
  the batches of `c`'s tfds pipeline (the same for every seed)."""
  seeds = len(s.seeds)
  if x_train is not None:
    return lambda start: (b["image"] for b in array_batches(
        {"image": x_train}, (seeds, s.batch_size), s.seeds[0], start))
  return lambda start: (np.broadcast_to(b["image"], (seeds,) + b["image"].shape)
                        for b in tfds_batches(c, s.batch_size, s.seeds[0], start))


def run(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, float]:
  cpu = config.data == "sample_images"
  if cpu:
    x_train, x_test = sample_image_crops(config, "train", seed=0), sample_image_crops(config, "test", seed=1)
  else:  # the running evaluation's held-out images: the first validation batch
    x_train, x_test = None, next(held_out(config))["image"]
  writer = MetricWriter(workdir, tensorboard=False)
  writer.write_config(config)
  result: Dict[str, float] = {}
  shown = {}
  for name in config.quantizers:
    if name not in ("l2_factorised", "plain"):
      raise UserError(f"unknown quantizer '{name}' (l2_factorised, plain)")
    model = make_model(config, name == "l2_factorised")
    running = lambda state: dict(zip(("test/mse", "test/perplexity"), (
        float(np.mean(a)) for a in evaluate_arrays(model, state["params"], x_test)[:2])))
    state = train(config, model, os.path.join(workdir, name), stage1_batches(config, config, x_train), running,
                  desc=name)
    if not cpu:
      params = jax.tree.map(lambda a: a[0], state["params"])
      result.update({f"{name}/{k}": v for k, v in
                     evaluate_held_out(config, model, params, held_out(config)).items()})
      continue
    mse, perplexity, usage, recon, indices = evaluate_arrays(model, state["params"], x_test)
    for s, seed in enumerate(config.seeds):
      result[f"{name}/seed{seed}/mse"] = float(mse[s])
      result[f"{name}/seed{seed}/perplexity"] = float(perplexity[s])
    result[f"{name}/mse"], result[f"{name}/perplexity"] = float(mse.mean()), float(perplexity.mean())
    result[f"{name}/usage"] = float(usage.mean())
    shown[name] = (np.bincount(indices[0].reshape(-1), minlength=config.codebook_size), recon[0])
  writer.write(config.total_steps, result)
  writer.close()
  if shown:
    plot(x_test, shown, result, os.path.join(workdir, "vit_vqgan_codebook.png"))
  return result


def plot(x_test, shown, result, path: str):
  plt = plots.pyplot()
  fig, axes = plt.subplots(2, 2, figsize=(9, 6))
  for row, (name, (counts, recon)) in enumerate(shown.items()):
    ax = axes[row, 0]
    ax.bar(np.arange(len(counts)), np.sort(counts)[::-1], width=1.0)
    ax.set_title(f"{name}: perplexity {result[f'{name}/perplexity']:.0f}, "
                 f"{result[f'{name}/usage']:.0%} of codes used")
    ax.set_xlabel("codes, by test frequency")
    ax.set_ylabel("test tokens")
    pairs = [np.concatenate([x_test[i], recon[i]], 0) for i in range(8)]
    axes[row, 1].imshow(np.clip(np.concatenate(pairs, 1), 0, 1))
    axes[row, 1].set_title(f"held-out crops (top), reconstructions: MSE {result[f'{name}/mse']:.4f}", fontsize=9)
    axes[row, 1].axis("off")
  plots.save(fig, path)
