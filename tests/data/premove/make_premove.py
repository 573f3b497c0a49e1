"""How the checkpoints beside this file were written: run at commit a1baf1c (before the restructure),
from that checkout, as `PYTHONPATH=. python make_premove.py OUT`; OUT/random_pruning/checkpoints and
OUT/pixpro/pixpro/checkpoints were copied here."""
import sys

from experiments import pixpro, random_pruning
from inception_zoo.train import classification


def main(out: str):
  c = random_pruning.get_config("runlocal")
  c.model.width, c.total_steps, c.checkpoint_every, c.keep_checkpoints, c.log_every = 8, 2, 1, 1, 1
  c.widths = ()
  c.input.eval_batch_size = 360
  classification.train_and_evaluate(c, f"{out}/random_pruning", random_pruning.TASK)

  p = pixpro.get_config("runlocal")
  p.update(methods=("pixpro",), width=8, hidden_dim=16, dim=8, total_steps=2, log_every=1, probe_steps=1,
           num_scenes=8, probe_scenes=4, probe_crops=4)
  pixpro.run(p, f"{out}/pixpro")


if __name__ == "__main__":
  main(sys.argv[1])
