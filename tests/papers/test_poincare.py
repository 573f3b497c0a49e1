"""Paper 19, Poincare ResNet: the ball's operations against geoopt's PoincareBall, the hand-written
backward passes against autodiff and torch autograd, the layers' invariants, and the paper's claims
from the experiment's CPU setting."""
import geoopt
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.test_util import check_grads

from experiments import poincare_resnet
from inception_zoo.errors import UserError
from inception_zoo.projects.poincare_resnet import poincare as P
from inception_zoo.projects.poincare_resnet.poincare_resnet import PoincareResNet

C = 0.1
BALL = geoopt.PoincareBall(c=C)


def points(n, d, seed=0, max_radius=0.8):
  """n points of the ball at radii up to max_radius of its radius 1 / sqrt(c)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  return (x * rng.uniform(0.05, max_radius, (n, 1)) / np.sqrt(C)).astype(np.float32)


def t(a):
  return torch.tensor(np.asarray(a))


def close(ours, reference, atol=1e-5):
  np.testing.assert_allclose(np.asarray(ours), reference.detach().numpy(), atol=atol, rtol=1e-5)


def test_ball_operations_match_geoopt():
  x, y = points(6, 5, 0), points(6, 5, 1)
  v = np.random.default_rng(2).normal(size=(6, 5)).astype(np.float32)
  close(P.mobius_add(x, y, C), BALL.mobius_add(t(x), t(y)))
  close(P.mobius_add(x, y[:1], C), BALL.mobius_add(t(x), t(y[:1])))  # broadcast
  close(P.expmap0(v, C), BALL.expmap0(t(v)))
  close(P.expmap0(10 * v, C), BALL.expmap0(t(10 * v)))  # projected at the same margin
  assert float(jnp.max(jnp.linalg.norm(P.expmap0(1e3 * v, C), axis=-1))) < C ** -0.5
  close(P.logmap0(y, C), BALL.logmap0(t(y)))
  close(P.expmap(x, v, C), BALL.expmap(t(x), t(v)))
  close(P.logmap(x, y, C), BALL.logmap(t(x), t(y)))
  close(P.dist(x, y, C), BALL.dist(t(x), t(y)))
  close(P.transp(x, y, v, C), BALL.transp(t(x), t(y), t(v)))
  close(P.mobius_scalar_mul(0.3, x, C), BALL.mobius_scalar_mul(torch.tensor(0.3), t(x)))
  close(P.lambda_x(x, C), BALL.lambda_x(t(x), keepdim=True))
  close(P.project(x * 1.5, C), BALL.projx(t(x * 1.5)))
  w = np.random.default_rng(3).uniform(0.1, 1, 6).astype(np.float32)
  close(P.midpoint(x, C), BALL.weighted_midpoint(t(x), reducedim=[0]))
  close(P.midpoint(x, C, weights=w), BALL.weighted_midpoint(t(x), t(w), reducedim=[0]))


def test_hyperplane_distances_match_geoopt_dist2plane():
  # HNN++: v_k(x) = 2 |z_k| d_signed(x, H_k), H_k through p_k = exp_0(r_k z_k / |z_k|) with normal
  # P_{0 -> p_k}(z_k).
  x = points(7, 4)
  rng = np.random.default_rng(1)
  z, r = rng.normal(size=(4, 3)).astype(np.float32), (0.5 * rng.normal(size=3)).astype(np.float32)
  zn = np.linalg.norm(z, axis=0)
  p = BALL.expmap0(t(r[:, None] * z.T / zn[:, None]))
  d = BALL.dist2plane(t(x)[:, None, :], p, BALL.transp0(p, t(z.T)), signed=True)
  close(P.hyperplane_distances(x, z, r, C), 2 * t(zn) * d, atol=1e-4)  # values up to 5


def test_custom_vjps_match_numerical_gradients():
  with jax.enable_x64(True):
    x, y = points(5, 4, 0).astype(np.float64), points(5, 4, 1).astype(np.float64)
    v = np.random.default_rng(2).normal(size=(5, 4))
    z, r = np.random.default_rng(3).normal(size=(4, 3)), np.array([0.3, -0.2, 0.0])
    rev = dict(order=1, modes=["rev"])
    # Jitted: check_grads evaluates each function many times at one shape (eager would dispatch op by op).
    check_grads(jax.jit(lambda a, b: P.mobius_add(a, b, C)), (x, y[:1]), **rev)  # broadcast: summed
    check_grads(jax.jit(lambda a: P.expmap0(a, C)), (v,), **rev)
    check_grads(jax.jit(lambda a: P.logmap0(a, C)), (y,), **rev)
    check_grads(jax.jit(lambda a, b, s: P.poincare_fc(a, b, s, C)), (x.reshape(5, 1, 4), z, r), **rev)


def test_custom_vjps_match_torch_autograd_and_jax_autodiff():
  x, y = points(5, 4, 0), points(5, 4, 1)
  g = np.random.default_rng(4).normal(size=(5, 4)).astype(np.float32)
  for ours, theirs, args in (
      (lambda a, b: P.mobius_add(a, b, C), BALL.mobius_add, (x, y)),
      (lambda a: P.expmap0(a, C), BALL.expmap0, (y,)),
      (lambda a: P.logmap0(a, C), BALL.logmap0, (y,))):
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(ours(*a) * g), argnums=tuple(range(len(args)))))(*args)
    tensors = [t(a).requires_grad_() for a in args]
    torch.sum(theirs(*tensors) * t(g)).backward()
    for ours_g, tensor in zip(grads, tensors):
      close(ours_g, tensor.grad, atol=2e-5)
  # The FC's hand-written backward against autodiff through the same forward formula.
  z = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
  r = np.array([0.3, -0.2, 0.0], np.float32)

  def autodiff_fc(a, b, s):
    w = jnp.sinh(np.sqrt(C) * P.hyperplane_distances(a, b, s, C)) / np.sqrt(C)
    return w / (1 + jnp.sqrt(1 + C * jnp.sum(w * w, -1, keepdims=True)))

  g3 = g[:, :3]
  ours = jax.jit(jax.grad(lambda *a: jnp.sum(P.poincare_fc(*a, C) * g3), argnums=(0, 1, 2)))(x, z, r)
  reference = jax.jit(jax.grad(lambda *a: jnp.sum(autodiff_fc(*a) * g3), argnums=(0, 1, 2)))(x, z, r)
  for a, b in zip(ours, reference):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # Zero vectors (padding, ReLU-ed pixels) get finite gradients.
  assert np.all(np.isfinite(jax.grad(lambda a: jnp.sum(P.expmap0(a, C) + P.logmap0(a, C)))(jnp.zeros(4))))


def test_identity_init_is_the_identity_and_standard_init_shrinks():
  x = points(16, 6)
  def output(layer, a):
    return jax.jit(lambda k, a: layer.init_with_output(k, a)[0])(jax.random.key(0), a)

  np.testing.assert_allclose(output(P.PoincareLinear(6, C), x), x, atol=1e-5)
  img = x.reshape(2, 2, 4, 6)  # one pixel per receptive field: beta factor 1
  np.testing.assert_allclose(output(P.PoincareConv2d(6, kernel_size=1, padding=0, c=C), img), img, atol=1e-5)
  y = output(P.PoincareLinear(6, C, id_init=False), x)
  big = output(P.PoincareConv2d(6, c=C), P.project(50 * img, C))  # at the margin: stays inside
  assert float(jnp.max(jnp.linalg.norm(big, axis=-1))) < C ** -0.5
  zero = np.zeros_like(x)
  assert float(jnp.mean(P.dist(y, zero, C))) < 0.7 * float(jnp.mean(P.dist(x, zero, C)))


def test_convolution_unfolds_like_torch_and_beta_concatenation():
  x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
  ours = jax.lax.conv_general_dilated_patches(x, (3, 3), (2, 2), ((1, 1), (1, 1)),
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
  theirs = torch.nn.functional.unfold(t(x).permute(0, 3, 1, 2), 3, padding=1, stride=2)
  np.testing.assert_allclose(ours.reshape(2, -1, 27), theirs.transpose(1, 2).numpy(), atol=1e-6)
  # B(n/2, 1/2) / B(n_i/2, 1/2) ~ sqrt(n_i / n); a single part is unchanged.
  assert P.beta_scale(4, 4) == pytest.approx(1.0)
  assert P.beta_scale(9 * 16, 16) == pytest.approx(1 / 3, rel=0.02)
  a, b = points(3, 4, 0), points(3, 2, 1)
  both = P.beta_concat([a, b], C)
  np.testing.assert_allclose(P.logmap0(both, C)[:, :4], P.logmap0(a, C) * P.beta_scale(6, 4), atol=1e-5)


def test_midpoint_batch_norm():
  x = jnp.asarray(points(64, 5).reshape(4, 4, 4, 5))
  bn = P.PoincareBatchNorm(C)
  variables = jax.jit(lambda k: bn.init(k, x, train=True))(jax.random.key(0))
  y, updates = jax.jit(lambda v: bn.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
  flat = np.asarray(x).reshape(-1, 5)
  mu = P.midpoint(flat, C)
  # Mobius scaling multiplies distances to the origin: the output's Frechet variance about the learned
  # mean (the origin at init) is the learned variance, 1.
  assert float(jnp.mean(P.dist(y, jnp.zeros(5), C) ** 2)) == pytest.approx(1.0, rel=1e-4)
  # At init (learned mean 0) it is the authors' map exp_nu(s P_{mu -> nu} log_mu(x)), in geoopt.
  spread = float(jnp.mean(P.dist(flat, mu, C) ** 2))
  nu = torch.zeros(5)
  moved = BALL.transp(t(mu), nu, BALL.logmap(t(mu), t(flat)))
  reference = BALL.expmap(nu, (1 / (spread + 1e-6)) ** 0.5 * moved)
  close(np.asarray(y).reshape(-1, 5), reference, atol=2e-5)
  # Running mean: one geodesic step of 0.1 from the origin toward the batch midpoint.
  close(updates["batch_stats"]["mean"], BALL.mobius_scalar_mul(torch.tensor(0.1), t(mu)))
  out = jax.jit(lambda v: bn.apply(v, x, train=False))({**variables, **updates})
  assert out.shape == x.shape and np.all(np.isfinite(np.asarray(out)))
  # The Frechet mean it replaces: a stationary point of the variance (mean log_mu(x) = 0).
  frechet = jax.jit(lambda a: P.frechet_mean(a, C))(flat)
  assert float(jnp.max(jnp.abs(jnp.mean(P.logmap(frechet, flat, C), axis=0)))) < 1e-4


def test_bad_input_is_a_one_line_error():
  x = jnp.zeros((2, 8, 8, 1))
  with pytest.raises(UserError, match="depth must be"):
    PoincareResNet(depth=10).init(jax.random.key(0), x)  # 6n + 2 for three stages
  with pytest.raises(UserError, match="curvature"):
    P.PoincareLinear(3, c=-1.0).init(jax.random.key(0), x)
  with pytest.raises(UserError, match="unknown setting"):
    poincare_resnet.get_config("resnet18")


def test_claims_identity_init_keeps_norms_and_tiny_poincare_resnet_learns_digits(tmp_path):
  # van Spengler et al. 2023, Sec. 3.1: through stacked Poincare layers the standard (HNN++) init
  # collapses the representation to the origin, the identity init keeps it. Measured: mean distance to
  # the origin 3.256 at the input; after 40 layers 3.256 (identity) and 2e-15 (standard; 1.41 after one
  # layer, 8e-5 after ten). Sec. 4: a Poincare ResNet trains end to end; measured: held-out top-1 0.917
  # on the digits (chance 0.1), loss 2.30 -> 0.24.
  r = poincare_resnet.main(["--config=runlocal", f"--workdir={tmp_path}"])
  assert r["norms/identity_last"] == pytest.approx(r["norms/input"], rel=1e-4)
  assert r["norms/identity_min"] == pytest.approx(r["norms/input"], rel=1e-4)
  assert r["norms/standard_last"] < 1e-3 * r["norms/input"]
  assert r["digits/top1"] > 0.8
  assert r["digits/final_loss"] < 0.5 * r["digits/first_loss"]
  assert (tmp_path / "poincare_resnet.png").exists()
