"""Image styles: filters over a rendered photo that keep its layout.

`apply_style(style, img, body)` takes a float32 (H, W, 3) image in [0, 1] and the body coverage
(H, W) and returns a new float32 image. Every filter is resolution-aware (blur radii and block
sizes scale with the image) so a style reads the same at 32 px and at 256 px.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from suti.world.context import STYLES

Array = np.ndarray
PAPER = np.array([0.97, 0.95, 0.9], dtype=np.float32)


def _luma(img: Array) -> Array:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _grad(a: Array) -> Array:
    """Gradient magnitude per pixel (central differences, edges replicated)."""
    gy, gx = np.gradient(a)
    return np.hypot(gx, gy)


def _to_pil(img: Array) -> Image.Image:
    return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))


def _from_pil(im: Image.Image) -> Array:
    return np.asarray(im, dtype=np.float32) / 255.0


def _blur(img: Array, radius: float) -> Array:
    return _from_pil(_to_pil(img).filter(ImageFilter.GaussianBlur(radius)))


@lru_cache(maxsize=32)
def _grain(size: int) -> Array:
    """Fixed paper grain in [0, 1] (same for every image of this size)."""
    rng = np.random.default_rng(0x9A9E)
    coarse = rng.random((size // 2 + 1, size // 2 + 1)).astype(np.float32)
    im = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    out = np.asarray(im, dtype=np.float32) / 255.0
    out.setflags(write=False)
    return out


def _grayscale(img: Array, body: Array) -> Array:
    return np.repeat(_luma(img)[..., None], 3, axis=2)


def _sketch(img: Array, body: Array) -> Array:
    lum = _luma(img)
    lines = np.clip(2.5 * _grad(lum) + 1.2 * _grad(body), 0.0, 1.0)
    tone = 1.0 - 0.45 * (1.0 - lum)
    grain = 0.96 + 0.04 * _grain(img.shape[0])
    out = PAPER * (tone * (1.0 - 0.85 * lines) * grain)[..., None]
    return out * np.array([1.0, 1.0, 1.03], dtype=np.float32)


def _pixel(img: Array, body: Array) -> Array:
    size = img.shape[0]
    block = max(2, round(size / 16))
    n = max(1, -(-size // block))
    small = _to_pil(img).resize((n, n), Image.BOX)
    small = small.quantize(colors=12, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB")
    return _from_pil(small.resize((n * block, n * block), Image.NEAREST))[:size, :size]


def _watercolor(img: Array, body: Array) -> Array:
    size = img.shape[0]
    r = max(0.6, size / 64)
    soft, wide = _blur(img, r), _blur(img, 3 * r)
    wash = 0.88 * soft + 0.12 * PAPER
    pooled = np.clip(np.abs(soft - wide).mean(axis=2) * 1.2, 0.0, 0.25)
    grain = 0.93 + 0.07 * _grain(size)
    return wash * ((1.0 - pooled) * grain)[..., None]


def _cartoon(img: Array, body: Array) -> Array:
    lum = _luma(img)[..., None]
    vivid = np.clip(lum + 1.3 * (img - lum), 0.0, 1.0)
    bands = (np.floor(lum * 4.0) + 0.6) / 4.0  # brightness in 4 flat bands, hue kept
    flat = np.clip(vivid * bands / np.maximum(lum, 1e-3), 0.0, 1.0)
    lines = np.clip(2.0 * _grad(body) + 1.5 * _grad(_luma(flat)), 0.0, 1.0)
    if img.shape[0] >= 96:
        lines = _from_pil(Image.fromarray((lines * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(3)))
    return flat * (1.0 - 0.9 * lines)[..., None]


_FILTERS = {
    "grayscale": _grayscale,
    "sketch": _sketch,
    "pixel": _pixel,
    "watercolor": _watercolor,
    "cartoon": _cartoon,
}


def apply_style(style: str, img: Array, body: Array) -> Array:
    """The image in this style (float32, same shape); 'photo' returns it unchanged."""
    if style == "photo":
        return img
    if style not in _FILTERS:
        from suti.errors import InputError

        raise InputError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    return np.clip(_FILTERS[style](img, body), 0.0, 1.0).astype(np.float32)
