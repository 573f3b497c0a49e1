"""Per-example augmentations of the modern ImageNet recipes (DeiT, ConvNeXt, InceptionNeXt, Swin),
numpy/PIL on the host as timm implements them; `pp.py` registers them as `randaugment` and
`random_erase`.

RandAugment: Cubuk, Zoph, Shlens, Le, "RandAugment: Practical automated data augmentation with a
reduced search space", CVPR Workshops 2020. `num_layers` operations drawn uniformly (with replacement)
from a fixed list, each at one global magnitude on a 0..10 scale. The papers quote timm's variant
`rand-m9-mstd0.5-inc1`: each operation is applied with probability 0.5, its magnitude drawn from
N(9, 0.5) and clipped to [0, 10], and the "increasing" list, in which every operation gets stronger
with the magnitude (timm's `_RAND_INCREASING_TRANSFORMS`). Operations and the magnitude-to-argument
mapping follow timm's `auto_augment.py` exactly (the same PIL calls), so images match it given the
same draws.

Random erasing: Zhong, Zheng, Kang, Li, Yang, "Random Erasing Data Augmentation", AAAI 2020, as timm's
`RandomErasing`: with probability p one box of 2-33% of the area, aspect ratio 0.3-3.3 (log-uniform),
filled with per-pixel standard-normal noise (mode 'pixel'), per-channel noise ('rand') or zeros
('const'). Like timm it runs after normalisation, on float images.
"""
import math
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from inception_zoo.errors import UserError

LEVEL_MAX = 10.0  # RandAugment's magnitude scale; timm's `_LEVEL_DENOM`
# timm fills pixels that rotations, shears and translations expose with the ImageNet mean.
IMAGENET_MEAN_U8 = (124, 116, 104)
RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}

RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
            "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
            "TranslateYRel")
RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                       "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                       "TranslateXRel", "TranslateYRel")


def _enhance(level, sign):
  return level / LEVEL_MAX * 1.8 + 0.1


def _enhance_increasing(level, sign):
  # 1.0 is "no change"; the magnitude moves the factor away from it, in a random direction.
  return max(0.1, 1.0 + sign * level / LEVEL_MAX * 0.9)


def _posterize(level, sign):
  return int(level / LEVEL_MAX * 4)


def _solarize(level, sign):
  return min(256, int(level / LEVEL_MAX * 256))


# Magnitude (0..10) and a random sign (+1/-1, used by the symmetric ops) -> the operation's argument,
# as timm's LEVEL_TO_ARG (translate_pct 0.45, its default); None for operations without one.
LEVEL_TO_ARG: Dict[str, Optional[Callable[[float, int], float]]] = {
    "AutoContrast": None,
    "Equalize": None,
    "Invert": None,
    "Rotate": lambda level, sign: sign * level / LEVEL_MAX * 30.0,
    "Posterize": _posterize,
    "PosterizeIncreasing": lambda level, sign: 4 - _posterize(level, sign),
    "Solarize": _solarize,
    "SolarizeIncreasing": lambda level, sign: 256 - _solarize(level, sign),
    "SolarizeAdd": lambda level, sign: min(128, int(level / LEVEL_MAX * 110)),
    "Color": _enhance,
    "ColorIncreasing": _enhance_increasing,
    "Contrast": _enhance,
    "ContrastIncreasing": _enhance_increasing,
    "Brightness": _enhance,
    "BrightnessIncreasing": _enhance_increasing,
    "Sharpness": _enhance,
    "SharpnessIncreasing": _enhance_increasing,
    "ShearX": lambda level, sign: sign * level / LEVEL_MAX * 0.3,
    "ShearY": lambda level, sign: sign * level / LEVEL_MAX * 0.3,
    "TranslateXRel": lambda level, sign: sign * level / LEVEL_MAX * 0.45,
    "TranslateYRel": lambda level, sign: sign * level / LEVEL_MAX * 0.45,
}


def _affine(img, matrix, resample, fill):
  return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def _solarize_add(img, add, thresh=128):
  lut = [min(255, i + add) if i < thresh else i for i in range(256)]
  return img.point(lut * len(img.getbands()))


def _posterize_bits(img, bits):
  return img if bits >= 8 else ImageOps.posterize(img, bits)


def _op_fns() -> Dict[str, Callable]:
  """Operation name -> fn(PIL image, argument, resample, fill) -> PIL image (timm's NAME_TO_OP)."""
  enhance = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast,
             "Brightness": ImageEnhance.Brightness, "Sharpness": ImageEnhance.Sharpness}
  fns = {
      "AutoContrast": lambda img, a, r, f: ImageOps.autocontrast(img),
      "Equalize": lambda img, a, r, f: ImageOps.equalize(img),
      "Invert": lambda img, a, r, f: ImageOps.invert(img),
      "Rotate": lambda img, a, r, f: img.rotate(a, resample=r, fillcolor=f),
      "Solarize": lambda img, a, r, f: ImageOps.solarize(img, a),
      "SolarizeAdd": lambda img, a, r, f: _solarize_add(img, a),
      "Posterize": lambda img, a, r, f: _posterize_bits(img, a),
      "ShearX": lambda img, a, r, f: _affine(img, (1, a, 0, 0, 1, 0), r, f),
      "ShearY": lambda img, a, r, f: _affine(img, (1, 0, 0, a, 1, 0), r, f),
      "TranslateXRel": lambda img, a, r, f: _affine(img, (1, 0, a * img.size[0], 0, 1, 0), r, f),
      "TranslateYRel": lambda img, a, r, f: _affine(img, (1, 0, 0, 0, 1, a * img.size[1]), r, f),
  }
  for name, cls in enhance.items():
    fns[name] = lambda img, a, r, f, cls=cls: cls(img).enhance(a)
  for name in ("Posterize", "Solarize", *enhance):
    fns[name + "Increasing"] = fns[name]  # same operation, argument mapped the other way
  return fns


OPS = _op_fns()


def apply_op(img: Image.Image, name: str, level: float, sign: int = 1,
             resample: int = Image.BICUBIC, fill: Sequence[int] = IMAGENET_MEAN_U8) -> Image.Image:
  """One RandAugment operation at magnitude `level` (0..10) on a PIL image."""
  arg_fn = LEVEL_TO_ARG[name]
  fill = tuple(fill) if img.mode == "RGB" else int(round(float(np.mean(fill))))
  return OPS[name](img, arg_fn(level, sign) if arg_fn else None, resample, fill)


def _number(key: str, text: str, spec: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise UserError(f"bad value '{text}' for '{key}' in RandAugment spec '{spec}'")


class RandAugment:
  """timm's `rand_augment_transform(spec)` on HWC uint8 arrays, with randomness from a numpy Generator.

  `spec` is timm's string: 'rand' then dash-separated m<magnitude>, n<layers>, p<probability of each
  layer>, mstd<magnitude std; > 100 draws uniformly from [0, m]>, mmax<clip>, inc<0/1>; defaults m10,
  n2, p0.5, mstd0, mmax10, inc0. `interpolation` of the geometric operations: 'random' (bilinear or
  bicubic, drawn per operation: timm's training default) or one of nearest/bilinear/bicubic.
  """

  def __init__(self, spec: str = "rand-m9-mstd0.5-inc1", fill: Sequence[int] = IMAGENET_MEAN_U8,
               interpolation: str = "random"):
    parts = spec.split("-")
    if parts[0] != "rand":
      raise UserError(f"RandAugment spec '{spec}' must start with 'rand' (e.g. 'rand-m9-mstd0.5-inc1')")
    opts = dict(m=LEVEL_MAX, n=2.0, p=0.5, mstd=0.0, mmax=LEVEL_MAX, inc=0.0)
    for part in parts[1:]:
      match = re.fullmatch(r"([a-z]+)(.*)", part)
      if not match or match.group(1) not in opts:
        raise UserError(f"unknown section '{part}' in RandAugment spec '{spec}' "
                        f"(m, n, p, mstd, mmax, inc)")
      opts[match.group(1)] = _number(match.group(1), match.group(2), spec)
    if not 0 <= opts["m"] <= opts["mmax"]:
      raise UserError(f"RandAugment magnitude {opts['m']:g} is outside [0, {opts['mmax']:g}] in '{spec}'")
    if not 0 <= opts["p"] <= 1 or opts["n"] < 0 or opts["mstd"] < 0 or opts["n"] != int(opts["n"]):
      raise UserError(f"RandAugment spec '{spec}' needs 0 <= p <= 1, an integer n >= 0 and mstd >= 0")
    if interpolation != "random" and interpolation not in RESAMPLE:
      raise UserError(f"unknown RandAugment interpolation '{interpolation}' "
                      f"(random, {', '.join(RESAMPLE)})")
    self.magnitude, self.num_layers, self.prob = opts["m"], int(opts["n"]), opts["p"]
    self.magnitude_std = math.inf if opts["mstd"] > 100 else opts["mstd"]
    self.magnitude_max = opts["mmax"]
    self.ops = RAND_INCREASING_OPS if opts["inc"] else RAND_OPS
    self.fill, self.interpolation = tuple(fill), interpolation

  def sample(self, rng: np.random.Generator) -> List[Tuple[str, float, int, int]]:
    """The operations one image gets: (name, magnitude, sign, PIL resample), skipped ones left out."""
    chosen = []
    for _ in range(self.num_layers):
      name = self.ops[rng.integers(len(self.ops))]
      if rng.uniform() >= self.prob:
        continue
      level = self.magnitude
      if self.magnitude_std == math.inf:
        level = rng.uniform(0.0, level)
      elif self.magnitude_std > 0:
        level = rng.normal(level, self.magnitude_std)
      level = min(max(level, 0.0), self.magnitude_max)
      sign = 1 if rng.uniform() < 0.5 else -1
      if self.interpolation == "random":
        resample = (Image.BILINEAR, Image.BICUBIC)[rng.integers(2)]
      else:
        resample = RESAMPLE[self.interpolation]
      chosen.append((name, float(level), sign, resample))
    return chosen

  def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if image.dtype != np.uint8:
      raise UserError(f"randaugment works on uint8 images (put it before value_range); got {image.dtype}")
    gray = image.ndim == 3 and image.shape[-1] == 1
    img = Image.fromarray(image[..., 0] if gray else image)
    for name, level, sign, resample in self.sample(rng):
      img = apply_op(img, name, level, sign, resample, self.fill)
    out = np.asarray(img)
    return out[..., None] if gray else out


def erase_box(h: int, w: int, rng: np.random.Generator, area_min: float, area_max: float,
              aspect_min: float, attempts: int = 10) -> Optional[Tuple[int, int, int, int]]:
  """timm's box: area a uniform fraction of the image, aspect log-uniform in [aspect_min,
  1/aspect_min], strictly smaller than the image; (top, left, height, width), or None when `attempts`
  draws do not fit."""
  log_aspect = (math.log(aspect_min), math.log(1 / aspect_min))
  for _ in range(attempts):
    area = rng.uniform(area_min, area_max) * h * w
    aspect = math.exp(rng.uniform(*log_aspect))
    eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
    if eh < h and ew < w:
      return int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1)), eh, ew
  return None


ERASE_MODES = ("pixel", "rand", "const")


def random_erase(image: np.ndarray, rng: np.random.Generator, p: float = 0.25, area_min: float = 0.02,
                 area_max: float = 1 / 3, aspect_min: float = 0.3, mode: str = "pixel") -> np.ndarray:
  """With probability `p`, one box of `image` (HWC float, normalised) replaced by noise or zeros."""
  if rng.uniform() >= p:
    return image
  h, w, c = image.shape
  box = erase_box(h, w, rng, area_min, area_max, aspect_min)
  if box is None:
    return image
  top, left, eh, ew = box
  shape = {"pixel": (eh, ew, c), "rand": (1, 1, c), "const": None}[mode]
  out = image.copy()
  out[top:top + eh, left:left + ew] = 0.0 if shape is None else rng.standard_normal(shape)
  return out
