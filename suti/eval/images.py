"""Image intake for the graders: any image -> checked 8-bit RGB -> square grader-size arrays.

Every grader works at GRADER_SIZE pixels (the bundled generator's size). Larger images are reduced
with an area (box) filter, which is what the world's analytic anti-aliasing converges to, so a
64 px render reduced to 32 px looks like a 32 px render; smaller images are enlarged bilinearly.
Non-square images are centre-cropped to a square first.

    arr = to_grader_array([img1, img2])      # (2, 32, 32, 3) uint8
    x = to_tensor(arr)                       # (2, 3, 32, 32) float32 in [-1, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from suti.errors import InputError

GRADER_SIZE = 32
MIN_OUTPUT_SIZE, MAX_OUTPUT_SIZE = 16, 1024  # what a generated image may measure (square)


def as_rgb(obj: Any, where: str = "image") -> Image.Image:
    """PIL / numpy / torch image -> 8-bit RGB PIL image; InputError on NaN, bad dtype or shape."""
    from suti.pipeline.preprocess import to_rgb_image

    return to_rgb_image(obj, where)


def check_output(obj: Any, where: str = "output") -> Image.Image:
    """A generated image as RGB PIL, or InputError if it is not a finite square image of sane size."""
    img = as_rgb(obj, where)
    w, h = img.size
    if w != h:
        raise InputError(f"{where}: expected a square image, got {w}x{h}")
    if not MIN_OUTPUT_SIZE <= w <= MAX_OUTPUT_SIZE:
        raise InputError(f"{where}: image side must be {MIN_OUTPUT_SIZE}-{MAX_OUTPUT_SIZE} px, got {w}")
    return img


def resize_square(img: Image.Image, size: int = GRADER_SIZE) -> Image.Image:
    """Centre-crop to a square, then area-reduce (or bilinearly enlarge) to size x size."""
    w, h = img.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size[0] == size:
        return img
    method = Image.Resampling.BOX if img.size[0] > size else Image.Resampling.BILINEAR
    return img.resize((size, size), method)


def to_grader_array(images: Sequence[Any], size: int = GRADER_SIZE) -> np.ndarray:
    """(N, size, size, 3) uint8 from a list of images of any supported kind and size."""
    if isinstance(images, (Image.Image, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
        raise InputError("expected a list of images, got one image")
    if isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1:] == (size, size, 3) \
            and images.dtype == np.uint8:  # fmt: skip
        return images
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(resize_square(as_rgb(im, f"image {i}"), size))
    return out


def to_tensor(arr: np.ndarray):
    """(N, H, W, 3) uint8 -> torch (N, 3, H, W) float32 in [-1, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    return x / 127.5 - 1.0


def add_noise(x, rng: np.random.Generator, prob: float = 0.3, max_sigma: float = 0.06):
    """Training augmentation: Gaussian pixel noise on a random subset of a [-1, 1] batch."""
    import torch

    n = x.shape[0]
    sigma = rng.uniform(0, max_sigma, n) * (rng.random(n) < prob)
    if not sigma.any():
        return x
    noise = torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))  # (N, 3, H, W)
    return (x + noise * torch.from_numpy(sigma.astype(np.float32)).view(n, 1, 1, 1)).clamp(-1, 1)
