"""Two augmented views of one image, each with its crop box: the input of pixel-level self-supervision
(PixPro: Xie et al., "Propagate Yourself", CVPR 2021; pixpro.py).

`two_views(view1, view2)` is a preprocessing function for `pipeline.train_batches`: it decodes the
example's image once and runs two pp strings on it, each starting with
`inception_crop(..., return_box=True)`, giving {"view1", "view2": (H, W, 3), "box1", "box2": (4,)}.
A box is (ymin, xmin, ymax, xmax) in [0, 1] of the decoded image, with xmin > xmax when the view was
flipped (`pp.flip_view_lr`): what `pixpro.positive_mask` reads. Anything else in the example (the
label) is dropped: self-supervision does not see it.

`byol_views(size, ...)` are the two pp strings of PixPro's official augmentation (the BYOL recipe,
contrast/data/transform.py of github.com/zdaxie/PixPro): a random resized crop (8-100% of the area,
aspect 3/4-4/3, bilinear), a flip, colour jitter (0.4, 0.4, 0.2, 0.1) with probability 0.8, grayscale
with probability 0.2, a Gaussian blur (sigma 0.1-2 px) always in view 1 and with probability 0.1 in
view 2, solarize with probability 0.2 in view 2 only, then ImageNet mean / std normalisation.
"""
from typing import Callable, Tuple

import numpy as np

from inception_zoo.data import pp
from inception_zoo.errors import UserError

Preprocess = Callable[[pp.Example, np.random.Generator], pp.Example]


def byol_views(size: int, area_min: float = 8, area_max: float = 100, jitter=(0.4, 0.4, 0.2, 0.1),
               jitter_p: float = 0.8, grayscale_p: float = 0.2, blur_p=(1.0, 0.1),
               solarize_p=(0.0, 0.2)) -> Tuple[str, str]:
  """The pp strings of view 1 and view 2 (BYOL's asymmetric pair); `*_p` are the probabilities."""
  crop = f"inception_crop({size}, area_min={area_min}, area_max={area_max}, return_box=True)"
  b, c, s, h = jitter
  common = [crop, "flip_view_lr", f"color_jitter({b}, {c}, {s}, {h}, p={jitter_p})",
            f"random_grayscale({grayscale_p})"]
  return tuple("|".join(common + [f"gaussian_blur(p={blur})", f"solarize(p={sol})", "normalize"])
               for blur, sol in zip(blur_p, solarize_p))


def two_views(view1: str, view2: str) -> Preprocess:
  """(example, rng) -> {"view1", "box1", "view2", "box2"}; see the module docstring."""
  decode, ops = pp.build("decode"), (pp.build(view1), pp.build(view2))

  def preprocess(example: pp.Example, rng: np.random.Generator) -> pp.Example:
    image = decode({"image": example["image"]}, rng)["image"]
    out = {}
    for i, op in enumerate(ops, 1):
      view = op({"image": image}, rng)
      if "box" not in view:
        raise UserError(f"view {i}'s preprocessing gives no crop box; start it with "
                        f"inception_crop(..., return_box=True)")
      out[f"view{i}"], out[f"box{i}"] = view["image"], np.asarray(view["box"], np.float32)
    return out

  return preprocess
