"""VIM, stage 2 of Vector-quantized Image Modeling (Yu et al., ICLR 2022), paper 15 of the zoo: a
class-conditional decoder-only transformer over ViT-VQGAN tokens, and a linear probe on its features.
(inception_zoo/projects/vit_vqgan/, README.md there: what is measured, and how).

CPU setting (about 1.5 min): over the tokens of a small digits ViT-VQGAN, held-out NLL 1.99 nats/token
(1.83 with the class) vs 3.18 for code frequencies; a linear probe on the middle block 0.79:
  python -m experiments.vim --config=runlocal --workdir=workdirs/vim
Full setting: stage 1, then VIM-Large on its ImageNet tokens, FID / IS of 50k samples.
"""
import ml_collections

from inception_zoo.errors import UserError
from inception_zoo.main import run_experiment
from inception_zoo.projects.vit_vqgan import run as vqgan_run, vim, vit_vqgan
from inception_zoo.projects.vit_vqgan.run_vim import run


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      name="vim_digits", data="digits", seed=0, image_size=8, channels=1, patch_size=2,
      # stage 1, trained by experiments.vit_vqgan.train (one seed)
      stage1=dict(size=(1, 32, 2, 64), latent_dim=32, codebook_size=64, code_dim=4, seeds=(0,),
                  weights=dict(l2=1.0), batch_size=64, total_steps=400, learning_rate=3e-3, warmup_steps=0,
                  log_every=200, **vqgan_run.training_fields(full=False)),
      stage2=(2, 64, 4, 128), probe_layer=1, num_classes=10, class_dropout=0.5,
      batch_size=64, eval_batch_size=360, total_steps=600, learning_rate=3e-3, warmup_steps=0, log_every=200,
      eval_every=0, checkpoint_every=300, temperature=1.0, pp_train="", pp_eval="", num_threads=2,
      fid=vqgan_run.fid_fields()))
  if arg == "runlocal":
    return c
  if arg is not None:
    raise UserError(f"unknown setting '{arg}' (runlocal, or none = VIM-Large on ImageNet)")
  c.update(name="vim_large_i1k", image_size=256, channels=3, patch_size=8,
           stage2=vim.SIZES["large"], probe_layer=18, num_classes=1000, class_dropout=0.0,
           batch_size=1024, eval_batch_size=250, total_steps=450_000, learning_rate=4.5e-4, warmup_steps=5000,
           log_every=1000, eval_every=10_000, checkpoint_every=5000, num_threads=32)
  vqgan_run.imagenet_input(c, c.image_size)
  c.stage1.update(size=vit_vqgan.SIZES["small"], latent_dim=256, codebook_size=8192, code_dim=32,
                  batch_size=256, total_steps=500_000, learning_rate=1e-4, warmup_steps=5000, log_every=1000,
                  **vqgan_run.training_fields(full=True))
  c.stage1.weights.update(vit_vqgan.LOSS_WEIGHTS)
  return c


def main(argv=None):
  return run_experiment(get_config, run, argv)


if __name__ == "__main__":
  main()
