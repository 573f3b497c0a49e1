"""ViT-VQGAN's factorised, l2-normalised codebook (Yu et al., "Vector-quantized Image Modeling with
Improved VQGAN", ICLR 2022), paper 15 of the zoo: stage 1 on crops of real photographs.
(inception_zoo/projects/vit_vqgan/, README.md there: what is measured, and how).

CPU setting (about 2 min): 16 px crops of the sample photos, 256 codes, 4 seeds: the factorised 8-d l2
lookup against a plain 256-d codebook, code perplexity 6.1 vs 4.5, held-out MSE 0.0085 vs 0.0098:
  python -m experiments.vit_vqgan --config=runlocal --workdir=workdirs/vit_vqgan
Full setting: ViT-VQGAN-SS on ImageNet 256 px via tfds, 8192 codes in 32-d, 500k steps.
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.vit_vqgan import vit_vqgan
from inception_zoo.projects.vit_vqgan.run import fid_fields, imagenet_input, run, training_fields


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="vit_vqgan_sample_images", data="sample_images", downscale=2, crop=16, num_train=2048,
      num_test=512, patch_size=8, encoder=(1, 64, 4, 128), decoder=(1, 64, 4, 128), latent_dim=256,
      codebook_size=256, factorised_dim=8, quantizers=("l2_factorised", "plain"), seeds=(0, 1, 2, 3),
      batch_size=64, eval_batch_size=512, total_steps=400, learning_rate=1e-3, warmup_steps=0,
      log_every=200, weights=dict(l2=1.0, logit_laplace=0.1, perceptual=0.0, adversarial=0.0),
      pp_train="", pp_eval="", num_threads=2, fid=fid_fields(), **training_fields(full=False)))
  if arg == "runlocal":
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = ViT-VQGAN-SS on ImageNet)")
  c.update(name="vit_vqgan_ss_i1k", downscale=1, crop=256, num_train=0, num_test=50_000,
           patch_size=8, encoder=vit_vqgan.SIZES["small"], decoder=vit_vqgan.SIZES["small"], latent_dim=256,
           codebook_size=8192, factorised_dim=32, quantizers=("l2_factorised",), seeds=(0,), batch_size=256,
           eval_batch_size=250, total_steps=500_000, learning_rate=1e-4, warmup_steps=5000, log_every=1000,
           num_threads=32, **training_fields(full=True))
  imagenet_input(c, c.crop)
  c.weights.update(vit_vqgan.LOSS_WEIGHTS)
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
