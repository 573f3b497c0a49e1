"""Run at commit a1baf1c (before the restructure): writes tiny checkpoints that the moved code must restore."""
import sys
out = sys.argv[1]
from experiments import random_pruning, pixpro
from inception_zoo.train import classification

c = random_pruning.get_config("runlocal")
c.model.width, c.total_steps, c.checkpoint_every, c.keep_checkpoints, c.log_every = 8, 2, 1, 1, 1
c.widths = ()
c.input.eval_batch_size = 360
classification.train_and_evaluate(c, f"{out}/random_pruning", random_pruning.TASK)

p = pixpro.get_config("runlocal")
p.update(methods=("pixpro",), width=8, hidden_dim=16, dim=8, total_steps=2, log_every=1, probe_steps=1,
         num_scenes=8, probe_scenes=4, probe_crops=4)
pixpro.run(p, f"{out}/pixpro")
