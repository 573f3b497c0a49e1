"""The segmentation core learns: DeepLabV3+'s CPU setting (CPS's layout on a quarter-width ResNet-18, 500 steps
on the generated shapes) segments the shapes well above the background-only prediction (mIoU 0.178: the
background's IoU 0.888 over 5 classes). Seeds 0 / 1 / 2 measured mIoU 0.342 / 0.312 / 0.323 (README); CI runs
seed 0 and asserts the lowest seed less three times the spread.

Semantic FPN's CPU setting learns more slowly (seeds 0 / 1 / 2: mIoU 0.251 / 0.247 / 0.280): its lowest seed
less three spreads falls below the background-only score, so `make reproduce` asserts only that it beats that
score (the lowest seed is 2 spreads above it)."""
import pytest

from experiments import deeplabv3plus, semantic_fpn

BACKGROUND_ONLY = 0.178  # the mIoU of predicting background everywhere on the held-out scenes


@pytest.mark.slow
def test_deeplabv3plus_cpu_setting_segments_the_shapes(tmp_path, record_property):
  result = deeplabv3plus.main(["--config=runlocal", f"--workdir={tmp_path}"])
  record_property("mIoU", result["eval/mIoU"])
  assert result["eval/mIoU"] > 0.312 - 3 * (0.342 - 0.312), result  # 0.222


@pytest.mark.reproduce
def test_semantic_fpn_cpu_setting_segments_the_shapes(tmp_path, record_property):
  result = semantic_fpn.main(["--config=runlocal", f"--workdir={tmp_path}"])
  record_property("mIoU", result["eval/mIoU"])
  assert result["eval/mIoU"] > BACKGROUND_ONLY, result
