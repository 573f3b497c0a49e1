"""VIM (paper 15, stage 2) on the tokens of a small ViT-VQGAN: the model and its sampler are unit-tested in
test_vit_vqgan.py; here the experiment's command line runs at half its steps and its claims are asserted."""
import json

import pytest

from experiments import vim


@pytest.mark.slow
def test_vim_models_digit_tokens_and_its_features_probe_well(tmp_path):
  # Half the CPU setting's steps (stage 1: 200 of 400, stage 2: 300 of 600) keep the test near 30 s.
  result = vim.main(["--config=runlocal", f"--workdir={tmp_path}", "--config.stage1.total_steps=200",
                     "--config.total_steps=300"])
  # Measured at these steps: unigram 2.67, without / with the class 1.71 / 1.56 nats; probe 0.84.
  assert result["nll_unconditional"] < result["unigram_nll"] - 0.5, result
  assert result["nll_conditional"] < result["nll_unconditional"], result  # the class token helps
  assert result["probe_accuracy"] > 0.6, result  # chance is 0.10
  assert (tmp_path / "vim_tokens.png").exists()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert any("probe_accuracy" in r for r in rows)
