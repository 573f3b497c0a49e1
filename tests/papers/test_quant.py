"""Quantisers (uniform with STE, DenseShift shift weights), the multiplication-free inference check, HAWQ's
bit allocation and fine-tuning order, and the QAT reparametrisation of a registered model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inception_zoo.errors import UserError
from inception_zoo.projects.hawq import hawq
from inception_zoo.quant import shift, uniform
from inception_zoo.registry import create_model
from inception_zoo.train import qat


def test_uniform_weight_levels_and_ste():
  w = jax.random.normal(jax.random.key(0), (3, 3, 4, 5))
  for bits in (2, 3, 4, 8):
    q = np.asarray(uniform.quantize_weight(w, bits))
    qmax = 2 ** (bits - 1) - 1
    scale = np.max(np.abs(np.asarray(w)), axis=(0, 1, 2)) / qmax
    k = q / scale
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)  # integer multiples of the channel's step
    assert np.all(np.abs(np.round(k)) <= qmax)
    np.testing.assert_allclose(np.max(np.abs(q), axis=(0, 1, 2)), qmax * scale, rtol=1e-6)
  b = np.asarray(uniform.quantize_weight(w, 1))  # one bit: sign x the channel's mean magnitude
  mean = np.mean(np.abs(np.asarray(w)), axis=(0, 1, 2))
  np.testing.assert_allclose(np.abs(b), np.broadcast_to(mean, w.shape), rtol=1e-6)
  c = jax.random.normal(jax.random.key(1), w.shape)
  g = jax.grad(lambda w: jnp.sum(uniform.quantize_weight(w, 2) * c))(w)
  np.testing.assert_allclose(g, c, rtol=1e-6)  # straight through
  x = jax.random.normal(jax.random.key(2), (4, 7))
  g = jax.grad(lambda x: jnp.sum(uniform.quantize_activation(x, 4) * x))(x)
  assert np.all(np.isfinite(g))
  q = np.asarray(uniform.quantize_activation(x, 4))
  assert len(np.unique(q)) <= 16 and np.any(q == 0)


def test_shift_weights_are_signed_powers_of_two_never_zero():
  key = jax.random.key(0)
  sign = jax.random.normal(key, (3, 3, 8, 16)).at[0, 0, 0, 0].set(0.0)
  latents = shift.low_variance_init(jax.random.key(1), sign.shape, bits=3)
  w = shift.quantized_values(sign, latents, zero_free=True)
  assert np.all(shift.is_signed_power_of_two(w)) and not np.any(w == 0)
  assert set(np.unique(np.abs(w))) == {1.0, 2.0, 4.0, 8.0}
  z = shift.quantized_values(sign, latents, zero_free=False)
  assert set(np.unique(np.abs(z))) == {0.0, 1.0, 2.0, 4.0}
  # The nested binaries reach every exponent: p = ((b1 + 1) b2 + 1) b3.
  bits = jnp.array([[0, 1, 0, 1, 1, 0, 1, 1],
                    [0, 0, 1, 1, 0, 1, 1, 1],
                    [0, 0, 0, 0, 1, 1, 1, 1]], jnp.float32)
  np.testing.assert_array_equal(shift.nested_exponent(bits), [0, 0, 0, 0, 1, 2, 3, 3])


def test_shift_decomposition_gradients_follow_the_surrogate():
  """Backward of s * 2^p goes through s * sqrt(p + 1) (the official code's surrogate); the sign latent
  and each binary get straight-through gradients."""
  sign = jnp.array([0.3, -0.2])
  latents = jnp.array([[0.1, 0.1], [0.1, -0.1], [0.1, 0.1]])  # p = 3 and p = 0 ... b2 = 0 -> p = b3 = 1
  np.testing.assert_array_equal(shift.shift_weight(sign, latents), [8.0, -2.0])
  g_sign = jax.grad(lambda s: jnp.sum(shift.shift_weight(s, latents)))(sign)
  np.testing.assert_allclose(g_sign, [2.0, np.sqrt(2.0)], rtol=1e-6)  # sqrt(p + 1) at p = 3, 1
  g_lat = jax.grad(lambda t: jnp.sum(shift.shift_weight(sign, t)))(latents)
  # d sqrt(p + 1) / dp = 1 / (2 sqrt(p + 1)); dp/db3 = (b1 + 1) b2 + 1 = 3 and 1.
  np.testing.assert_allclose(g_lat[2], [3 / (2 * 2.0), -1 / (2 * np.sqrt(2.0))], rtol=1e-6)


def test_direct_shift_weights_are_signed_powers_of_two_with_straight_through_gradient():
  """The baseline without the decomposition: the kernel itself rounds to sign(w) * 2^p in the log
  domain on the zero-free levels, never 0, and passes its gradient straight through."""
  w = jnp.array([[0.0, -0.01, 0.2, -0.26, 0.4, 0.55, -1.0]]).T  # one output channel, peak 1.0
  # alpha = 1/8: |w|/alpha = 0, 0.08, 1.6, 2.08, 3.2, 4.4, 8 -> p = 0, 0, 1, 1, 2, 2, 3; +1 at 0.
  np.testing.assert_array_equal(shift.direct_weight(w, 3).ravel(), [1, -1, 2, -2, 4, 4, -8])
  np.testing.assert_allclose(shift.direct_kernel(w, 3), shift.direct_weight(w, 3) / 8, rtol=1e-6)
  big = jax.random.normal(jax.random.key(0), (3, 3, 8, 16))
  d = np.asarray(shift.direct_weight(big, 3))
  assert np.all(shift.is_signed_power_of_two(d)) and set(np.unique(np.abs(d))) == {1.0, 2.0, 4.0, 8.0}
  # From the same kernel the decomposition's encoding lands on the same levels.
  np.testing.assert_array_equal(d, shift.quantized_values(big, shift.encode(big, 3)))
  c = jax.random.normal(jax.random.key(1), big.shape)
  g = jax.grad(lambda k: jnp.sum(shift.direct_kernel(k, 3) * c))(big)
  np.testing.assert_allclose(g, c, rtol=1e-6)


def test_encode_picks_the_nearest_level():
  w = np.array([[0.01, -0.2, 0.26, -0.55, 1.0]], np.float32).T  # one output channel, peak 1.0
  got = shift.quantized_values(w, shift.encode(w, 3, zero_free=True), zero_free=True).ravel()
  # alpha = 1/8: |w|/alpha = 0.08, 1.6, 2.08, 4.4, 8 -> exponents 0, 1, 1, 2, 3 (rounded in log2).
  np.testing.assert_array_equal(got, [1, -2, 2, -4, 8])
  got = shift.quantized_values(w, shift.encode(w, 3, zero_free=False), zero_free=False).ravel()
  # alpha = 1/4: 0.04 -> 0; 0.8, 1.04 -> 1; 2.2 -> 2; 4 -> 4.
  np.testing.assert_array_equal(got, [0, -1, 1, -2, 4])


def test_ldexp_path_equals_matmul_and_conv_bit_for_bit():
  """With integer-coded activations (8-bit) every partial sum is exact, so the shift-add path equals
  the dense product with the quantised weights bit for bit; with float activations they agree to
  summation-order rounding."""
  rng = np.random.default_rng(0)
  sign = np.where(rng.random((24, 10)) < 0.5, -1.0, 1.0).astype(np.float32)
  p = rng.integers(0, 4, (24, 10))
  w = sign * np.exp2(p).astype(np.float32)
  s, e = shift.sign_and_exponent(w)
  x = rng.integers(-128, 128, (5, 24)).astype(np.float32)
  np.testing.assert_array_equal(shift.shift_matmul(jnp.asarray(x), s, e), jnp.asarray(x) @ jnp.asarray(w))
  xf = rng.normal(size=(5, 24)).astype(np.float32)
  np.testing.assert_allclose(shift.shift_matmul(jnp.asarray(xf), s, e), xf @ w, rtol=1e-5, atol=1e-5)
  k = np.where(rng.random((3, 3, 4, 6)) < 0.5, -1.0, 1.0) * np.exp2(rng.integers(0, 4, (3, 3, 4, 6)))
  k = k.astype(np.float32)
  img = rng.integers(0, 256, (2, 7, 7, 4)).astype(np.float32)
  ref = jax.lax.conv_general_dilated(img, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  s, e = shift.sign_and_exponent(k)
  np.testing.assert_array_equal(shift.shift_conv(jnp.asarray(img), s, e), ref)
  with pytest.raises(UserError, match="not signed powers of two"):
    shift.sign_and_exponent(np.array([1.0, 0.0, 3.0]))


def test_freezing_metric():
  assert shift.frozen_share(np.array([1, 2, 4, -8]), np.array([1, 2, -4, 8])) == 0.5
  with pytest.raises(UserError, match="differ in shape"):
    shift.frozen_share(np.ones(3), np.ones(4))


def test_bit_allocation_meets_the_budget_and_follows_sensitivity():
  sizes = {"a": 100, "b": 1000, "c": 10_000, "d": 400}
  sens = {"a": 5.0, "b": 1.0, "c": 0.01, "d": 0.5}
  budget = 3 * sum(sizes.values())
  bits = hawq.allocate_bits(sens, sizes, (2, 3, 4, 8), budget)
  assert hawq.model_bits(bits, sizes) <= budget
  ranked = sorted(sizes, key=lambda k: -sens[k])
  assert [bits[k] for k in ranked] == sorted((bits[k] for k in ranked), reverse=True)
  assert bits["a"] == 8 and bits["c"] == 2
  with pytest.raises(UserError, match="below"):
    hawq.allocate_bits(sens, sizes, (2, 4), 1 * sum(sizes.values()))
  params = {k: {"kernel": jax.random.normal(jax.random.key(i), (n // 4, 4))}
            for i, (k, n) in enumerate(sizes.items())}
  paths = {f"{k}/kernel": n for k, n in sizes.items()}
  curv = {f"{k}/kernel": v for k, v in sens.items()}
  best = hawq.pareto_bits(curv, params, paths, (2, 3, 4, 8), budget)
  assert hawq.model_bits(best, paths) <= budget
  omega = lambda b: sum(hawq.perturbations(curv, params, b).values())
  assert omega(best) <= omega(hawq.uniform_bits(paths, 3))
  order = hawq.finetune_order(hawq.perturbations(curv, params, best))
  values = hawq.perturbations(curv, params, best)
  assert [values[k] for k in order] == sorted(values.values(), reverse=True)


@pytest.fixture(scope="module")
def tiny():
  model = create_model("resnet20", num_classes=10, depth=8, widths=(4, 8, 16))
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  return model, x


def _qmodel(model, **quant):
  c = qat.base_config()
  c.quant.update(**quant)
  return qat.QuantizedModel(model, c.quant.to_dict())


def test_qat_reparametrisation_of_a_registered_model(tiny):
  model, x = tiny
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
  q = _qmodel(model, method="uniform", bits=2, exclude=r"fc/.*",
              order=("layer1/layers_0/conv1/kernel", "conv1/kernel"), stages=2,
              stage_steps=5, layer_bits=(("conv1/kernel", 8),))
  v = jax.jit(lambda: q.init(rngs, x))()
  plain = jax.eval_shape(lambda: model.init(rngs, x))["params"]
  assert jax.tree.structure(v["params"]) == jax.tree.structure(plain)
  act = _qmodel(model, bits=8, act_bits=8)
  fp, quantized, close = jax.jit(lambda v: [m.apply(v, x, train=False)[0] for m in (model, q, act)])(v)
  assert not np.allclose(fp, quantized)
  model_params = jax.jit(q.model_params)
  p = model_params(v["params"], jnp.int32(0))
  np.testing.assert_array_equal(p["conv1"]["kernel"], v["params"]["conv1"]["kernel"])  # stage 2 not begun
  assert len(np.unique(p["layer1"]["layers_0"]["conv1"]["kernel"][..., 0])) <= 3  # 2 bits: ternary
  assert len(np.unique(model_params(v["params"], jnp.int32(5))["conv1"]["kernel"][..., 0])) > 3
  with pytest.raises(UserError, match="not a quantised kernel"):
    jax.eval_shape(lambda: _qmodel(model, layer_bits=(("fc/kernel", 4),), exclude=r"fc/.*").init(rngs, x))
  with pytest.raises(UserError, match="unknown quant.method"):
    _qmodel(model, method="ternary")
  np.testing.assert_allclose(close, fp, atol=0.05 * float(np.max(np.abs(fp))))
  s = _qmodel(model, method="denseshift", bits=3, exclude=r"conv1/kernel|fc/.*")
  sv = jax.jit(lambda: s.init(rngs, x))()
  assert "kernel_shift" in sv["params"]["layer1"]["layers_0"]["conv1"]
  values = np.concatenate([w.ravel() for w in s.shift_values(sv["params"]).values()])
  assert np.all(shift.is_signed_power_of_two(values))
  grads = jax.jit(jax.grad(lambda p: jnp.sum(s.apply({**sv, "params": p}, x, train=False)[0])))(sv["params"])
  assert float(jnp.sum(jnp.abs(grads["layer1"]["layers_0"]["conv1"]["kernel_shift"]))) > 0
  d = _qmodel(model, method="shift_direct", bits=3, exclude=r"conv1/kernel|fc/.*")
  start = d.shift_latents_from(v["params"])  # the kernels are the latents: no leaves added
  assert jax.tree.structure(start) == jax.tree.structure(plain)
  direct = d.shift_values(start)["layer1/layers_0/conv1/kernel"]
  assert np.all(shift.is_signed_power_of_two(direct))
  k = d.model_params(start)["layer1"]["layers_0"]["conv1"]["kernel"]
  np.testing.assert_allclose(k, shift.direct_kernel(start["layer1"]["layers_0"]["conv1"]["kernel"], 3))
