"""DenseShift (Li, Liu, Yang, Courville, Xing, Partovi Nia, "DenseShift: Towards Accurate and Efficient
Low-Bit Power-of-Two Quantization", ICCV 2023), paper 3 of the zoo: 3-bit zero-free shift weights
against the zero-including shift baseline, the same levels trained directly, and full precision,
transferred from a trained checkpoint.

CPU, embedded digits (about 1.5 minutes on 2 cores; 3-bit DenseShift ends closer to full precision
than the zero-including 3-bit shift network, every weight a signed power of two, and the sign-scale
decomposition leaves far fewer weights frozen at their level than direct training):
  python -m experiments.denseshift --config=runlocal --workdir=workdirs/denseshift_digits
ImageNet ResNet-18, 3 bits (prepare `tfds build imagenet2012 --manual_dir=...`):
  python -m experiments.denseshift --config=resnet18_i1k --workdir=WORKDIR --config.input.data_dir=TFDS_DIR

One run: (1) trains the full-precision model in `<workdir>/fp` (skipped when `config.fp_from` names
trained or imported weights); (2) for each scheme (`denseshift`: +-2^p, p in 0..3; `shift_zero`: the
S3 baseline, 0 and +-2^q, q in 0..2) turns the weights into the sign-scale decomposition's latents
(the kernel is the sign latent, the shift binaries start at +-`quant.latent_std` encoding the nearest
level: low-variance initialisation); `shift_direct` (DenseShift's levels, the full-precision kernel
quantised to sign(w) * 2^round(log2(|w| / alpha)) with the straight-through estimator) keeps the
weights as they are, so it starts from the same levels as `denseshift`; each start is saved in
`<workdir>/<scheme>_init`; (3) trains each with the QAT trainer (`inception_zoo.train.qat`) in
`<workdir>/<scheme>`; (4) reports held-out top-1 and loss, weight freezing (the share of shift
weights whose value at the end equals the transferred one, our reading of the paper's metric: see
`inception_zoo.quant.shift`), the share of zeros, and checks the multiplication-free form: every
DenseShift weight is +-2^k, never 0.

Full setting (the paper's ImageNet protocol as we read it, verify): ResNet-18, all
convolutions but the first at 3 bits, the first convolution and the classifier in full precision,
from full-precision weights (`config.fp_from`, e.g. timm's resnet18 converted with
`python -m inception_zoo.convert`), SGD momentum 0.9, learning rate 0.1 cosine over 90 epochs,
weight decay 1e-4 (the paper reports 69.4% top-1 for 3-bit ResNet-18, full precision 69.8%).

CPU setting (`--config=runlocal`): scikit-learn's 8x8 digits upsampled to 16x16, ResNet-20 at half
width (8/16/32 channels), 200 full-precision SGD steps (batch 32), then 100 steps of each 3-bit
scheme at a tenth of the rate, the first convolution and the classifier in full precision, latent
binaries at +-1e-5 (small against the latents' updates, so they can flip). Measured (seed 0, from
the same full-precision weights, 0.986 top-1): DenseShift 0.975 top-1 / 0.076 loss, zero-including
0.967 / 0.129, direct training 0.983 / 0.042. Weight freezing, the paper's comparison: 99.4% of
the directly trained weights kept their transferred level against 54% of DenseShift's (the
decomposition's direction; here the weights that stay put also keep the transferred network's
loss, so the direct network ends closer to full precision in 100 steps). The zero-including
network froze 23%, its share of zeros growing from 25% to 57%. With latents at +-1e-3 no binary
flips in 100 steps (both decomposed schemes then train only their sign latents and BatchNorm; 0.983
top-1 each, loss 0.045 vs 0.052). The direct run adds about 20 s to the CPU time.
"""
import copy
import os
from typing import Dict

import ml_collections
import numpy as np

from experiments.common import digits
from inception_zoo import ckpt
from inception_zoo.data import datasets
from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.quant import shift
from inception_zoo.train import classification, qat

SCHEMES = ("denseshift", "shift_zero", "shift_direct")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = qat.base_config()
  c.fp_from = ""  # trained full-precision weights; empty: train them in <workdir>/fp
  c.fp_steps = 0
  c.fp_lr = 0.1
  # Every convolution but the stem; the stem and the classifier stay in full precision.
  c.quant.update(method="denseshift", bits=3, select=r".*kernel", exclude=r"conv1/kernel|fc/.*",
                 latent_std=1e-5)
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", momentum=0.9, nesterov=False, decay=0.9, eps=1e-8, b1=0.9, b2=0.999,
      weight_decay=1e-4, wd_mask=r".*kernel", grad_clip=0.0))
  c.schedule = ml_collections.ConfigDict(dict(name="cosine", base_lr=0.1, warmup_epochs=0.0,
                                               end_lr_fraction=0.0))
  arg = arg or "resnet18_i1k"
  if arg == "runlocal":
    c.name = "denseshift_digits"
    c.model_name = "resnet20"
    c.model = ml_collections.ConfigDict(dict(widths=(8, 16, 32)))
    digits(c, size=16, batch_size=32, eval_batch_size=360)
    c.fp_steps = 200
    c.total_steps = 100
    c.schedule.base_lr = 0.01
    c.log_every = 50
    c.checkpoint_every = 0
    return c
  if arg != "resnet18_i1k":
    raise UserError(f"unknown setting '{arg}' (runlocal, resnet18_i1k)")
  from experiments.common import imagenet
  c.name = "denseshift_resnet18_i1k"
  c.model_name = "resnet18"
  # ImageNet mean/std: the input timm's resnet18 weights (a usual `fp_from`) were trained on.
  imagenet(c, size=224, eval_resize=256, batch_size=256, num_epochs=90.0, norm="normalize")
  c.fp_steps = 90 * 1_281_167 // 256
  return c


def train(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, object]:
  fp_dir = config.fp_from or os.path.join(workdir, "fp")
  result: Dict[str, object] = {}
  if not config.fp_from:
    result["fp/top1"] = classification.run(qat.fp_config(config), fp_dir)["eval/top1"]
  weights, _ = ckpt.load_weights(fp_dir)
  num_classes = config.num_classes or datasets.get_dataset(
      config.input.data, config.input.train_split, config.input.get("data_dir")).num_classes
  for scheme in SCHEMES:
    c = copy.deepcopy(config)
    c.quant.method = scheme
    model = qat.build_model(c, num_classes)
    start = model.shift_latents_from(weights["params"])
    init_dir = os.path.join(workdir, f"{scheme}_init")
    if not os.path.exists(os.path.join(init_dir, "variables")):
      ckpt.save_weights(init_dir, {"params": start, "batch_stats": weights["batch_stats"]},
                        {"source": f"{scheme} latents of {fp_dir}"})
    c.init_from = init_dir
    out = qat.run(c, os.path.join(workdir, scheme))
    trained, _ = ckpt.load_weights(os.path.join(workdir, scheme))
    before, after = model.shift_values(start), model.shift_values(trained["params"])
    values = np.concatenate([v.ravel() for v in after.values()])
    result[f"{scheme}/top1"] = out["eval/top1"]
    result[f"{scheme}/loss"] = out["eval/loss"]
    start_values = np.concatenate([v.ravel() for v in before.values()])
    result[f"{scheme}/frozen"] = shift.frozen_share(start_values, values)
    result[f"{scheme}/zeros"] = float(np.mean(values == 0))
    result[f"{scheme}/signed_pow2"] = bool(np.all(shift.is_signed_power_of_two(values)))
  print("denseshift: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
  return result


def main(argv=None):
  return run_experiment(get_config, train, argv)


if __name__ == "__main__":
  main()
