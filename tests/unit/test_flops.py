"""MAC counts: the papers' convention equals PyTorch's FlopCounterMode on the timm twin and the papers'
tables; XLA's cost analysis differs by padding and elementwise operations, as flops.py documents."""
import jax
import jax.numpy as jnp
import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from inception_zoo.tools import flops


# (model, resolution, GMACs in the papers' tables / timm's model list, XLA count / papers' count)
CASES = [
    # timm lists inception_v4 at 12.28 GMACs (299 px); 1x7/7x1 'SAME' convolutions on 17x17 maps make
    # XLA's padding-free count 4% lower.
    ("inception_v4", 299, 12.28, (0.94, 0.98)),
    # InceptionNeXt's Table (4.2G at 224 px); GELU and BatchNorm over its 4x MLPs make XLA's 7% higher.
    ("inception_next_tiny", 224, 4.2, (1.04, 1.09)),
    # Swin V2's Table (SwinV2-T, 8x8 windows: 5.9G at 256 px); softmax, norms and GELU add 5% for XLA.
    ("swinv2_tiny_window8_256", 256, 5.9, (1.03, 1.07)),
]


@pytest.mark.parametrize("name, size, paper, xla_ratio", CASES)
def test_macs_equal_pytorch_and_the_paper(name, size, paper, xla_ratio):
  counts = flops.model_macs(name, size)
  model = timm.create_model(name).eval()
  with torch.no_grad(), FlopCounterMode(display=False) as counter:
    model(torch.zeros(1, 3, size, size))
  assert counts["gmacs"] * 1e9 == counter.get_total_flops() / 2  # the same count, exactly
  assert counts["gmacs"] == pytest.approx(paper, rel=0.01)
  assert xla_ratio[0] < counts["xla_gmacs"] / counts["gmacs"] < xla_ratio[1], counts


def conv(padding, groups=1):
  return lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), padding, feature_group_count=groups,
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("padding, groups, kernel, xla_share", [
    ("VALID", 1, (3, 3, 16, 32), 1.0),
    ("VALID", 16, (3, 3, 1, 16), 1.0),            # depthwise: counted per group by both
    ("SAME", 1, (3, 3, 16, 32), (22 / 24) ** 2),  # 8 outputs x 3 taps per axis, 2 of them padding
    ("SAME", 16, (1, 11, 1, 16), 58 / 88),        # InceptionNeXt's band kernel on an 8-wide map
])
def test_xla_charges_only_taps_inside_the_input(padding, groups, kernel, xla_share):
  x, k = jax.ShapeDtypeStruct((1, 8, 8, 16), jnp.float32), jax.ShapeDtypeStruct(kernel, jnp.float32)
  fn = conv(padding, groups)
  macs = flops.jaxpr_macs(jax.make_jaxpr(fn)(x, k).jaxpr)
  out = jax.eval_shape(fn, x, k).shape
  assert macs == out[1] * out[2] * out[3] * kernel[0] * kernel[1] * kernel[2]
  assert flops.xla_flops(fn, x, k) / 2 == pytest.approx(macs * xla_share)


def test_scan_bodies_count_once_per_iteration():
  def fn(h, ws):
    return jax.lax.scan(lambda h, w: (h @ w, None), h, ws)[0]
  jaxpr = jax.make_jaxpr(fn)(jnp.zeros((2, 8)), jnp.zeros((5, 8, 8))).jaxpr
  assert flops.jaxpr_macs(jaxpr) == 5 * 2 * 8 * 8


def test_cli(capsys):
  counts = flops.main(["--model", "inception_next_atto", "--size", "64"])
  assert f"inception_next_atto at 64x64: {counts['gmacs']:.3f} GMACs" in capsys.readouterr().out
  with pytest.raises(SystemExit) as exit_:
    flops.main(["--model", "inception_next_ato", "--size", "64"])
  assert exit_.value.code == 2
  assert "did you mean 'inception_next_atto'" in capsys.readouterr().err
