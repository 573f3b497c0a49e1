"""Claims of papers 16 and 17, each from its experiment's CPU setting run in full on embedded digits."""
from experiments import random_pruning, sparse_mobilenet


def test_random_pruning_gap_to_dense_shrinks_with_width(tmp_path):
  # Liu et al. 2022, Sec. 4.1: as the network gets wider, a randomly pruned (ERK, 90%) network trained
  # sparse approaches its dense equivalent. Measured: gaps 0.67 / 0.49 / 0.11 / 0.017 at widths
  # 8 / 32 / 128 / 512 (top-1 on 360 held-out digits; one image = 0.003).
  r = random_pruning.main(["--config=runlocal", f"--workdir={tmp_path}"])
  gaps = [r[f"gap/w{w}"] for w in (8, 32, 128, 512)]
  assert gaps[0] > 0.15 and gaps[-1] < 0.05, gaps  # large at width 8, small at 512
  assert gaps[0] > gaps[1] > gaps[2] > gaps[3], gaps  # shrinking at every width
  assert r["dense/w512"] > 0.9
  assert (tmp_path / "random_pruning_width.png").exists()


def test_gradual_pruning_stays_near_dense_and_runs_sparse(tmp_path):
  # Elsen et al. 2020, Sec. 5 (Zhu & Gupta's schedule): MobileNet v1 with its 1x1 convolutions and
  # classifier pruned (here 80%, a 1/4-width network) keeps the dense accuracy; the sparse 1x1 path
  # gives the dense masked network's outputs. Measured: dense 0.969, sparse 0.967.
  r = sparse_mobilenet.main(["--config=runlocal", f"--workdir={tmp_path}"])
  assert r["dense/eval/top1"] > 0.9
  assert r["sparse/eval/top1"] > r["dense/eval/top1"] - 0.03, r  # within 3 points (11 of 360 images)
  assert abs(r["pruned/global_density"] - 0.2) < 1e-3  # the schedule's final sparsity, exact per layer
  assert all(abs(v - 0.2) < 0.01 for k, v in r.items() if k.startswith("density/")), r
  assert r["sparse_path/layers"] >= 5
  assert r["sparse_path/top1"] == r["masked_dense/top1"] == r["sparse/eval/top1"]
  assert r["sparse_path/max_logit_error"] <= 1e-5 * r["sparse_path/logit_scale"]
