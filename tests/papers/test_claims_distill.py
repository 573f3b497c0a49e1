"""MEAL V2's claim on embedded digits: the student distilled from a teacher ensemble, without hard
labels, beats its own CE baseline (paper 12; experiments/meal_v2.py runs the CPU setting in full)."""
from experiments import meal_v2


def test_distilled_student_beats_its_ce_baseline(tmp_path):
  """Two ResNet-20-style teachers (about 97-98% top-1 each) distilled into a ResNet-8 at a quarter of
  their width, started from its briefly trained CE baseline (about 86-88%). Thresholds: at least 4
  points of top-1 over the baseline (seeds 0 and 1 gave +6.7 and +7.8) and at most 0.6x its held-out
  NLL (they gave 0.29x and 0.30x), with the teachers above the baseline. The CE control continued
  from the same baseline for the same steps is reported beside it (on digits it is as good: MEAL V2's
  gain over plain fine-tuning needs its ImageNet scale)."""
  r = meal_v2.main(["--config=runlocal", f"--workdir={tmp_path}", "--config.mesh.data=1"])
  print(r)
  assert min(r["teacher_t0/top1"], r["teacher_t1/top1"]) > r["baseline/top1"] + 0.05, r
  assert r["distilled/top1"] >= r["baseline/top1"] + 0.04, r
  assert r["distilled/nll"] <= 0.6 * r["baseline/nll"], r
