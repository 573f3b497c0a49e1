"""Preprocessing ops registered by name and composed from a string.

    fn = build("decode|inception_crop(299)|flip_lr|value_range(-1, 1)")
    example = fn({"image": jpeg_bytes, "label": 3}, np.random.default_rng(0))

Every op works on one example (a dict with at least "image", HWC uint8 until `value_range`) and gets a
`np.random.Generator`; the pipeline derives that generator from the seed and the example's position,
so augmentations replay exactly on resume. Ops are numpy/PIL so they run in grain's reader threads.
"""
import ast
import io
import math
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from inception_zoo.data import augment
from inception_zoo.errors import UserError, did_you_mean

Example = Dict[str, Any]
Op = Callable[[Example, np.random.Generator], Example]
_OPS: Dict[str, Callable[..., Op]] = {}


def register_op(fn: Callable[..., Op]) -> Callable[..., Op]:
  _OPS[fn.__name__] = fn
  return fn


def _parse(spec: str) -> Tuple[str, list, dict]:
  try:
    call = ast.parse(spec.strip(), mode="eval").body
    if isinstance(call, ast.Name):
      return call.id, [], {}
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
      raise SyntaxError
    args = [ast.literal_eval(a) for a in call.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    return call.func.id, args, kwargs
  except (SyntaxError, ValueError):
    raise UserError(f"cannot parse preprocessing op '{spec.strip()}' (expected name or name(args))")


def build(pp: str) -> Op:
  """Composes the ops of a '|'-separated string into one function (ex, rng) -> ex."""
  ops: List[Op] = []
  for spec in filter(str.strip, pp.split("|")):
    name, args, kwargs = _parse(spec)
    if name not in _OPS:
      raise UserError(f"unknown preprocessing op '{name}'{did_you_mean(name, _OPS)}")
    try:
      ops.append(_OPS[name](*args, **kwargs))
    except TypeError as e:
      raise UserError(f"bad arguments for preprocessing op '{spec.strip()}': {e}")

  def apply(example: Example, rng: np.random.Generator) -> Example:
    example = dict(example)
    for op in ops:
      example = op(example, rng)
    return example

  return apply


def _size(size) -> Tuple[int, int]:
  return (size, size) if isinstance(size, int) else tuple(size)


def _resize(image: np.ndarray, hw: Tuple[int, int], method: str = "bilinear") -> np.ndarray:
  resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
              "area": Image.BOX}[method]
  squeeze = image.ndim == 3 and image.shape[-1] == 1
  pil = Image.fromarray(image[..., 0] if squeeze else image)
  out = np.asarray(pil.resize((hw[1], hw[0]), resample))
  return out[..., None] if squeeze else out


@register_op
def decode(channels: int = 3) -> Op:
  """Encoded image bytes -> HWC uint8 (already-decoded arrays pass through)."""
  def op(ex, rng):
    if isinstance(ex["image"], (bytes, np.bytes_)):
      img = Image.open(io.BytesIO(ex["image"]))
      ex["image"] = np.asarray(img.convert("RGB" if channels == 3 else "L"))
      if channels == 1:
        ex["image"] = ex["image"][..., None]
    return ex
  return op


@register_op
def gray_to_rgb() -> Op:
  def op(ex, rng):
    if ex["image"].shape[-1] == 1:
      ex["image"] = np.repeat(ex["image"], 3, axis=-1)
    return ex
  return op


@register_op
def resize(size, method: str = "bilinear") -> Op:
  def op(ex, rng):
    ex["image"] = _resize(ex["image"], _size(size), method)
    return ex
  return op


@register_op
def resize_small(size: int, method: str = "bilinear") -> Op:
  """Resizes so that the shorter side is `size`, keeping the aspect ratio."""
  def op(ex, rng):
    h, w = ex["image"].shape[:2]
    s = size / min(h, w)
    ex["image"] = _resize(ex["image"], (max(1, round(h * s)), max(1, round(w * s))), method)
    return ex
  return op


@register_op
def central_crop(size) -> Op:
  th, tw = _size(size)

  def op(ex, rng):
    h, w = ex["image"].shape[:2]
    if h < th or w < tw:
      raise UserError(f"central_crop({size}) needs an image of at least that size; got {h}x{w}")
    y, x = (h - th) // 2, (w - tw) // 2
    ex["image"] = ex["image"][y:y + th, x:x + tw]
    return ex
  return op


def sample_inception_box(h: int, w: int, rng: np.random.Generator, area_min: float,
                         area_max: float, aspect=(3 / 4, 4 / 3), attempts: int = 10):
  """A random box covering area_min..area_max percent of the image (Inception-v1 augmentation).

  Falls back to the whole image when no box fits in `attempts` tries, as tf.image does.
  """
  for _ in range(attempts):
    area = h * w * rng.uniform(area_min, area_max) / 100
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    ch, cw = round(math.sqrt(area / ratio)), round(math.sqrt(area * ratio))
    if 0 < ch <= h and 0 < cw <= w:
      y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
      return y, x, ch, cw
  return 0, 0, h, w


@register_op
def inception_crop(size, area_min: float = 5, area_max: float = 100, method: str = "bilinear",
                   return_box: bool = False) -> Op:
  """Random-area, random-aspect crop resized to `size`.

  With `return_box=True` the crop's box in the source image, (ymin, xmin, ymax, xmax) in [0, 1], is
  stored under "box" (pixel-level self-supervision needs where the crop came from).
  """
  def op(ex, rng):
    h, w = ex["image"].shape[:2]
    y, x, ch, cw = sample_inception_box(h, w, rng, area_min, area_max)
    ex["image"] = _resize(ex["image"][y:y + ch, x:x + cw], _size(size), method)
    if return_box:
      ex["box"] = np.array([y / h, x / w, (y + ch) / h, (x + cw) / w], np.float32)
    return ex
  return op


@register_op
def random_crop(size, pad: int = 0) -> Op:
  """Random `size` crop after zero-padding each side by `pad` pixels."""
  th, tw = _size(size)

  def op(ex, rng):
    img = ex["image"]
    if pad:
      img = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    h, w = img.shape[:2]
    y, x = int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1))
    ex["image"] = img[y:y + th, x:x + tw]
    return ex
  return op


@register_op
def flip_lr(p: float = 0.5) -> Op:
  def op(ex, rng):
    if rng.uniform() < p:
      ex["image"] = ex["image"][:, ::-1]
      if "box" in ex:  # the box now reads mirrored
        ymin, xmin, ymax, xmax = ex["box"]
        ex["box"] = np.array([ymin, 1 - xmax, ymax, 1 - xmin], np.float32)
    return ex
  return op


def flip_box_lr(box: np.ndarray) -> np.ndarray:
  """The box of a view flipped left-right, in the original image's coordinates: xmin and xmax swap,
  so the view's columns read from xmin to xmax, right to left (PixPro's positive pairs need it)."""
  ymin, xmin, ymax, xmax = box
  return np.array([ymin, xmax, ymax, xmin], np.float32)


@register_op
def flip_view_lr(p: float = 0.5) -> Op:
  """A left-right flip whose "box" stays in the original image (`flip_box_lr`); `flip_lr` instead
  moves the box into the mirrored image."""
  def op(ex, rng):
    if rng.uniform() < p:
      ex["image"] = ex["image"][:, ::-1]
      ex["box"] = flip_box_lr(ex["box"])
    return ex
  return op


def adjust_hue(img: Image.Image, hue: float) -> Image.Image:
  """torchvision's PIL hue shift: the HSV hue channel moves by hue x 255 (wrapping), hue in [-0.5, 0.5]."""
  h, s, v = img.convert("HSV").split()
  shifted = (np.asarray(h, np.int64) + int(hue * 255)) % 256
  return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v)).convert(img.mode)


COLOR_ADJUSTMENTS = (lambda img, f: ImageEnhance.Brightness(img).enhance(f),
                     lambda img, f: ImageEnhance.Contrast(img).enhance(f),
                     lambda img, f: ImageEnhance.Color(img).enhance(f),
                     adjust_hue)


def color_jitter_image(image: np.ndarray, order: Sequence[int], factors: Sequence) -> np.ndarray:
  """Brightness, contrast, saturation and hue (indices 0-3 of `COLOR_ADJUSTMENTS`) at `factors`, in
  `order`, on a uint8 RGB image: torchvision's ColorJitter on PIL images, the draws given; a factor
  None skips its adjustment."""
  img = Image.fromarray(image)
  for i in order:
    if factors[i] is not None:
      img = COLOR_ADJUSTMENTS[i](img, factors[i])
  return np.asarray(img)


@register_op
def color_jitter(brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, p: float = 1.0) -> Op:
  """With probability `p`, torchvision's ColorJitter (as SimCLR, BYOL and PixPro use it): factors
  uniform in [max(0, 1 - s), 1 + s] (hue: [-hue, hue]), the four adjustments in a random order, one of
  strength 0 skipped; on uint8 RGB images, so before `value_range`/`normalize`."""
  if not (min(brightness, contrast, saturation) >= 0 and 0 <= hue <= 0.5):
    raise UserError(f"color_jitter needs brightness, contrast, saturation >= 0 and 0 <= hue <= 0.5; "
                    f"got {brightness}, {contrast}, {saturation}, {hue}")

  def op(ex, rng):
    if rng.uniform() < p:
      order = rng.permutation(4)
      factors = [rng.uniform(max(0.0, 1 - s), 1 + s) if s else None
                 for s in (brightness, contrast, saturation)]
      factors.append(rng.uniform(-hue, hue) if hue else None)
      ex["image"] = color_jitter_image(ex["image"], order, factors)
    return ex
  return op


@register_op
def random_grayscale(p: float = 0.2) -> Op:
  """With probability `p`, the image's luma (PIL's "L") in all three channels (torchvision's
  RandomGrayscale)."""
  def op(ex, rng):
    if rng.uniform() < p:
      ex["image"] = np.repeat(np.asarray(Image.fromarray(ex["image"]).convert("L"))[..., None], 3, -1)
    return ex
  return op


@register_op
def gaussian_blur(sigma_min: float = 0.1, sigma_max: float = 2.0, p: float = 1.0) -> Op:
  """With probability `p`, PIL's Gaussian blur at a radius (sigma) uniform in [sigma_min, sigma_max]
  pixels: the blur of MoCo v2 and PixPro's official augmentation."""
  def op(ex, rng):
    if rng.uniform() < p:
      radius = rng.uniform(sigma_min, sigma_max)
      ex["image"] = np.asarray(Image.fromarray(ex["image"]).filter(ImageFilter.GaussianBlur(radius)))
    return ex
  return op


@register_op
def solarize(threshold: int = 128, p: float = 1.0) -> Op:
  """With probability `p`, every uint8 value >= `threshold` inverted (PIL's ImageOps.solarize)."""
  def op(ex, rng):
    if rng.uniform() < p:
      ex["image"] = np.asarray(ImageOps.solarize(Image.fromarray(ex["image"]), threshold))
    return ex
  return op


@register_op
def randaugment(spec: str = "rand-m9-mstd0.5-inc1", fill=augment.IMAGENET_MEAN_U8,
                interpolation: str = "random") -> Op:
  """RandAugment (Cubuk et al. 2020) from timm's spec string, e.g. 'rand-m9-mstd0.5-inc1' (what DeiT,
  ConvNeXt and InceptionNeXt train with); on uint8 images, so before `value_range`. See augment.py."""
  rand_augment = augment.RandAugment(spec, fill, interpolation)

  def op(ex, rng):
    ex["image"] = rand_augment(ex["image"], rng)
    return ex
  return op


@register_op
def random_erase(p: float = 0.25, area_min: float = 2, area_max: float = 100 / 3,
                 aspect_min: float = 0.3, mode: str = "pixel") -> Op:
  """Random erasing (Zhong et al. 2020) as timm's RandomErasing: with probability `p` one box of
  area_min..area_max percent of the image (as inception_crop) gets standard-normal noise ('pixel'),
  one noise colour ('rand') or zeros ('const'). On normalised float images, so after `value_range`."""
  if not (0 <= p <= 1 and 0 < area_min <= area_max <= 100 and 0 < aspect_min <= 1):
    raise UserError(f"random_erase needs 0 <= p <= 1, 0 < area_min <= area_max <= 100 and "
                    f"0 < aspect_min <= 1; got p={p}, area {area_min}..{area_max}, aspect_min={aspect_min}")
  if mode not in augment.ERASE_MODES:
    raise UserError(f"unknown random_erase mode '{mode}' ({', '.join(augment.ERASE_MODES)})")

  def op(ex, rng):
    if not np.issubdtype(ex["image"].dtype, np.floating):
      raise UserError(f"random_erase works on normalised float images (put it after value_range); "
                      f"got {ex['image'].dtype}")
    ex["image"] = augment.random_erase(ex["image"], rng, p, area_min / 100, area_max / 100,
                                       aspect_min, mode)
    return ex
  return op


@register_op
def value_range(vmin: float = -1, vmax: float = 1, in_min: float = 0, in_max: float = 255) -> Op:
  """Maps [in_min, in_max] linearly onto [vmin, vmax] as float32."""
  scale = (vmax - vmin) / (in_max - in_min)

  def op(ex, rng):
    ex["image"] = ((np.asarray(ex["image"], np.float32) - in_min) * scale + vmin).astype(np.float32)
    return ex
  return op


# torchvision's ImageNet statistics, which timm's ResNets, MobileNets and EfficientNets expect
# (Inception-v3/v4 and Inception-ResNet weights expect value_range(-1, 1) instead).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_op
def normalize(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Op:
  """uint8 RGB -> (x / 255 - mean) / std per channel, as float32."""
  mean32, std32 = np.float32(mean) * 255, np.float32(std) * 255

  def op(ex, rng):
    ex["image"] = ((np.asarray(ex["image"], np.float32) - mean32) / std32).astype(np.float32)
    return ex
  return op


@register_op
def keep(*keys: str) -> Op:
  def op(ex, rng):
    return {k: ex[k] for k in keys}
  return op
