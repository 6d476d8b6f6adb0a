"""Render a subject in a context: scene + body + pattern + mark + accessory, then the style filter.

Frame coordinates: x right, y down, both in [-1, 1] across the image. The body frame is the frame
moved to the subject centre, divided by its scale, rotated back and un-flipped, so everything the
subject carries (pattern, mark, accessory) follows the view. Coverage is analytic (no supersampling
needed); `render(..., supersample=k)` renders k times larger and box-filters, for checking that.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from suti.errors import InputError
from suti.world.context import Context
from suti.world.paint import accessory_layer, coverage, mark_coverage, pattern_coverage
from suti.world.scenes import background
from suti.world.shapes import outline_of
from suti.world.styles import apply_style
from suti.world.traits import Subject

MIN_SIZE, MAX_SIZE = 16, 512
BASE_SCALE = 0.6  # body radius in frame units: the subject spans ~60 % of the frame
SCALE_FACTORS = {"normal": 1.0, "small": 0.65, "large": 1.35}
POSITION_X = {"center": 0.0, "left": -0.3, "right": 0.3}


@dataclass(frozen=True)
class Layers:
    """Everything a render is made of, as float32 arrays of one size (values in [0, 1])."""

    background: np.ndarray  # (S, S, 3) the scene alone, unstyled
    body: np.ndarray  # (S, S) body coverage
    pattern: np.ndarray  # (S, S) pattern ink coverage in the body frame (not clipped to the body)
    mark: np.ndarray  # (S, S) mark coverage (not clipped to the body)
    accessory: np.ndarray  # (S, S) accessory alpha
    photo: np.ndarray  # (S, S, 3) composed image before the style filter
    image: np.ndarray  # (S, S, 3) final image

    @property
    def body_color_weight(self) -> np.ndarray:
        """How much of each pixel shows the body colour itself (what a recolour may change)."""
        return self.body * (1 - self.pattern) * (1 - self.mark) * (1 - self.accessory)

    def to_pil(self) -> Image.Image:
        """The final image as an RGB PIL image."""
        return Image.fromarray((np.clip(self.image, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def check_size(size) -> int:
    """The size as an int, or InputError if it is not an integer in MIN_SIZE..MAX_SIZE."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"image size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}")
    return int(size)


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    x, y = np.meshgrid(c, c)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def body_frame(context: Context, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """(qx, qy, rx, ry, px): body-frame coordinates, unrotated offsets from the centre, pixel size."""
    x, y = _grid(size)
    scale = BASE_SCALE * SCALE_FACTORS[context.scale]
    rx, ry = (x - POSITION_X[context.position]) / scale, y / scale
    a = np.deg2rad(context.rotation)
    ca, sa = np.float32(np.cos(a)), np.float32(np.sin(a))
    qx, qy = rx * ca - ry * sa, rx * sa + ry * ca
    if context.flip:
        qx = -qx
    return qx, qy, rx, ry, 2.0 / size / scale


def render_layers(subject: Subject, context: Context | None = None, size: int = 64) -> Layers:
    """All layers of one render (see `Layers`)."""
    return _compose(subject, _check_inputs(subject, context), check_size(size))


def _compose(subject: Subject, context: Context, size: int) -> Layers:
    qx, qy, rx, ry, px = body_frame(context, size)
    bg = background(context.scene, context.variant, size)

    body = coverage(outline_of(subject).signed_distance(qx, qy), px).astype(np.float32)
    pattern = pattern_coverage(subject, qx, qy, px).astype(np.float32)
    mark = mark_coverage(subject, qx, qy, px).astype(np.float32)
    acc_alpha, acc_color = accessory_layer(context.accessory, outline_of(subject), qx, qy, px)

    base = np.asarray(subject.body_rgb(context.recolor or None), dtype=np.float32)
    ink = np.asarray(subject.ink_rgb, dtype=np.float32)
    mark_rgb = np.asarray(subject.mark_rgb, dtype=np.float32)
    p, m, b = pattern[..., None], mark[..., None], body[..., None]
    surface = base * (1.0 - p) + ink * p  # exact: a pixel fully under ink does not depend on base
    surface = surface * (1.0 - m) + mark_rgb * m
    shade = 1.0 + 0.12 * np.clip(-(rx + ry) * 0.5, -1.0, 1.0)  # light from the top left, fixed on screen
    surface = np.clip(surface * shade[..., None], 0.0, 1.0)

    photo = bg * (1.0 - b) + surface * b
    photo = photo * (1.0 - acc_alpha[..., None]) + acc_color
    image = apply_style(context.style, photo, body)
    return Layers(bg, body, pattern, mark, acc_alpha, photo, image)


def render(subject: Subject, context: Context | None = None, size: int = 64, supersample: int = 1) -> Image.Image:
    """The subject in the context as an RGB PIL image of size x size pixels."""
    size = check_size(size)
    if isinstance(supersample, bool) or not isinstance(supersample, (int, np.integer)) or supersample < 1:
        raise InputError(f"supersample must be a positive integer, got {supersample!r}")
    if size * supersample > 2 * MAX_SIZE:
        raise InputError(f"size x supersample must be at most {2 * MAX_SIZE}, got {size} x {supersample}")
    context = _check_inputs(subject, context)
    big = _compose(subject, context, size * int(supersample)).to_pil()
    return big if supersample == 1 else big.reduce(int(supersample))


def _check_inputs(subject: Subject, context: Context | None) -> Context:
    if not isinstance(subject, Subject):
        raise InputError(f"expected a Subject (use make_subject), got {type(subject).__name__}")
    if context is None:
        return Context()
    if not isinstance(context, Context):
        raise InputError(f"expected a Context, got {type(context).__name__}")
    return context
