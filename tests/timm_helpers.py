"""Parity against timm for the families added after paper 1: every parameter a fresh timm model leaves
at a constant (BatchNorm and LayerNorm affine parameters and statistics, zero biases, layer-scale
gammas at 1e-6, Swin V2's attention logit scales) is randomised, so a mistake in any of them changes
the logits."""
import jax
import jax.numpy as jnp
import numpy as np
import timm
import torch

from inception_zoo.convert import convert_timm


def randomized_timm(name: str, seed: int = 0, **options):
  torch.manual_seed(seed)
  model = timm.create_model(name, pretrained=False, **options).eval()
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0.0, 0.5)
        m.running_var.uniform_(0.5, 2.0)
    for key, p in model.named_parameters():
      if key.endswith("gamma"):  # layer scale: O(1), so the residual branch counts
        p.uniform_(0.5, 1.5)
      elif key.endswith("logit_scale"):  # Swin V2: some heads above the clamp at log(100) = 4.6
        p.uniform_(1.0, 5.5)
      elif p.ndim == 1 and key.endswith("weight"):  # norm scales
        p.normal_(1.0, 0.2)
      elif key.endswith("bias"):
        p.normal_(0.0, 0.2)
  return model


def randomize(module, seed: int = 0):
  """A torch module with every tensor redrawn so outputs spread (kernels N(0, 1/fan_in), BN statistics and affine
  parameters away from identity), in eval mode: what the torchvision / transcription parity tests compare."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, t in module.state_dict().items():
      if t.ndim >= 2:
        t.normal_(0.0, (1.0 / np.prod(t.shape[1:])) ** 0.5)
      elif name.endswith("running_var"):
        t.uniform_(0.5, 2.0)
      elif name.endswith("weight"):
        t.normal_(1.0, 0.2)
      elif t.is_floating_point():
        t.normal_(0.0, 0.2)
  return module.eval()


def param_count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def abstract_param_count(name: str, size: int = 224) -> int:
  from inception_zoo import create_model
  shapes = jax.eval_shape(create_model(name).init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  return param_count(shapes["params"])


def max_logit_error(name: str, expected_params: int, size: int = 224, batch: int = 1, **options):
  """Converts a randomised timm `name` (built with `options` on both sides, e.g. fewer blocks),
  checks its parameter count, and returns (max |jax - timm| over the logits, max |timm logit|) at
  `size` px in eval mode."""
  reference = randomized_timm(name, **options)
  state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
  model, variables = convert_timm(name, state_dict, image_size=size, **options)
  assert param_count(variables["params"]) == expected_params == sum(
      p.numel() for p in reference.parameters())
  x = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    ref = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  out, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  return float(np.abs(np.asarray(out) - ref).max()), float(np.abs(ref).max())
