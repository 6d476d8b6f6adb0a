"""Procedural background scenes, resolution-independent and cached per (scene, variant, size).

Each scene is drawn in frame coordinates u (right) and v (down) in [0, 1] at twice the requested
size and box-filtered down, so hard edges (mortar lines, stars) are anti-aliased.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np

Array = np.ndarray


def _mix(a, b, t: Array) -> Array:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a + (b - a) * t[..., None]


def _smooth(t: Array) -> Array:
    return t * t * (3 - 2 * t)


def _value_noise(u: Array, v: Array, cells_u: int, cells_v: int, rng: np.random.Generator) -> Array:
    """Smooth noise in [0, 1] from a random lattice of cells_u x cells_v cells over the frame."""
    lattice = rng.random((cells_v + 2, cells_u + 2))
    x, y = np.clip(u, 0, 1) * cells_u, np.clip(v, 0, 1) * cells_v
    i, j = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = _smooth(x - i), _smooth(y - j)
    top = lattice[j, i] * (1 - fx) + lattice[j, i + 1] * fx
    bottom = lattice[j + 1, i] * (1 - fx) + lattice[j + 1, i + 1] * fx
    return top * (1 - fy) + bottom * fy


def _step(d: Array, width: float) -> Array:
    """Soft inside-indicator of d < 0 with a transition of `width` frame units."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def _plain(u, v, rng, aa):
    tint = rng.uniform(-0.02, 0.02, 3)
    img = _mix(np.array([0.94, 0.94, 0.95]) + tint, np.array([0.83, 0.83, 0.85]) + tint, v)
    return img - 0.05 * ((u - 0.5) ** 2 + (v - 0.5) ** 2)[..., None]


def _brick_wall(u, v, rng, aa):
    rows = 6 + int(rng.integers(0, 2))
    row = np.floor(v * rows)
    shift = np.where(row % 2 == 0, 0.0, 0.5) + rng.uniform(0, 1)
    bx = u * 3 + shift
    col = np.floor(bx)
    fx, fy = bx - col, v * rows - row
    mortar = np.minimum(np.minimum(fx, 1 - fx) / 3, np.minimum(fy, 1 - fy) / rows) - 0.008
    shade = (np.sin(col * 12.9898 + row * 78.233) * 43758.5453) % 1.0
    brick = _mix([0.62, 0.22, 0.16], [0.75, 0.36, 0.25], shade) * (0.9 + 0.2 * _value_noise(u, v, 40, 40, rng))[..., None]
    return _mix(brick, [0.78, 0.76, 0.72], _step(mortar, aa))


def _grass(u, v, rng, aa):
    blades = _value_noise(u, v, 90, 6, rng)
    clumps = _value_noise(u, v, 6, 6, rng)
    img = _mix([0.16, 0.38, 0.1], [0.45, 0.72, 0.25], 0.6 * blades + 0.4 * clumps)
    return img * (0.8 + 0.25 * v)[..., None]


def _beach(u, v, rng, aa):
    horizon = 0.3 + rng.uniform(-0.05, 0.05)
    shore = horizon + 0.16 + 0.02 * np.sin(u * 9 + rng.uniform(0, 6))
    sky = _mix([0.55, 0.78, 0.95], [0.85, 0.93, 0.98], np.clip(v / horizon, 0, 1))
    sea = _mix([0.1, 0.45, 0.7], [0.25, 0.65, 0.8], np.clip((v - horizon) / 0.16, 0, 1))
    sand = _mix([0.93, 0.84, 0.63], [0.86, 0.74, 0.52], _value_noise(u, v, 50, 50, rng))
    img = _mix(sky, sea, _step(horizon - v, aa))
    return _mix(img, sand, _step(shore - v, aa))


def _jungle(u, v, rng, aa):
    img = _mix([0.04, 0.2, 0.08], [0.1, 0.32, 0.12], _value_noise(u, v, 8, 8, rng))
    for _ in range(70):
        cx, cy = rng.uniform(-0.1, 1.1, 2)
        a, length, width = rng.uniform(0, np.pi), rng.uniform(0.08, 0.2), rng.uniform(0.03, 0.07)
        px, py = u - cx, v - cy
        lu, lv = px * np.cos(a) + py * np.sin(a), -px * np.sin(a) + py * np.cos(a)
        d = (np.hypot(lu / length, lv / width) - 1.0) * width
        green = rng.uniform([0.05, 0.3, 0.05], [0.3, 0.65, 0.25])
        img = _mix(img, green, _step(d, aa))
    return img


def _snow(u, v, rng, aa):
    ground = 0.55 + 0.06 * np.sin(u * 5 + rng.uniform(0, 6))
    sky = _mix([0.7, 0.78, 0.86], [0.86, 0.9, 0.94], np.clip(v / 0.6, 0, 1))
    snow = _mix([0.97, 0.98, 1.0], [0.85, 0.89, 0.95], _value_noise(u, v, 12, 12, rng))
    img = _mix(sky, snow, _step(ground - v, aa))
    flakes = np.zeros_like(u)
    for cx, cy, r in zip(rng.random(60), rng.random(60), rng.uniform(0.004, 0.01, 60)):
        flakes = np.maximum(flakes, _step(np.hypot(u - cx, v - cy) - r, aa))
    return _mix(img, [1.0, 1.0, 1.0], 0.9 * flakes)


def _city_street(u, v, rng, aa):
    img = _mix([0.62, 0.72, 0.82], [0.8, 0.84, 0.88], v)
    x = -0.05
    while x < 1.0:
        w, top = rng.uniform(0.12, 0.25), rng.uniform(0.05, 0.4)
        gray = rng.uniform(0.3, 0.55)
        inside = _step(np.maximum(np.abs(u - x - w / 2) - w / 2, top - v), aa)
        wx, wy = (u - x) * 14 % 1.0, (v - top) * 16 % 1.0
        lit = ((wx > 0.3) & (wx < 0.7) & (wy > 0.3) & (wy < 0.75) & (v > top + 0.03)).astype(float)
        facade = _mix(np.array([gray, gray, gray * 1.08]), [0.95, 0.85, 0.45], 0.8 * lit)
        img = _mix(img, facade, inside)
        x += w + rng.uniform(0.0, 0.03)
    road = _mix([0.3, 0.3, 0.32], [0.22, 0.22, 0.24], _value_noise(u, v, 30, 30, rng))
    img = _mix(img, road, _step(0.72 - v, aa))
    dash = np.maximum(np.abs(v - 0.86) - 0.012, np.abs((u * 5 % 1.0) - 0.5) / 5 - 0.05)
    return _mix(img, [0.95, 0.95, 0.9], _step(dash, aa))


def _ocean(u, v, rng, aa):
    img = _mix([0.12, 0.42, 0.66], [0.02, 0.16, 0.36], v)
    warp = 0.03 * _value_noise(u, v, 6, 6, rng)
    waves = np.abs(((v + warp) * 14 + 0.3 * np.sin(u * 20 + v * 30)) % 1.0 - 0.5)
    crest = _step(waves - 0.06, 0.04) * (0.3 + 0.7 * _value_noise(u, v, 12, 24, rng))
    return _mix(img, [0.7, 0.88, 0.95], 0.6 * crest)


def _desert(u, v, rng, aa):
    img = _mix([0.95, 0.86, 0.62], [0.98, 0.93, 0.78], np.clip(v / 0.45, 0, 1))
    sx, sy = rng.uniform(0.15, 0.85), rng.uniform(0.08, 0.18)
    img = _mix(img, [1.0, 0.97, 0.8], _step(np.hypot(u - sx, v - sy) - 0.07, aa))
    for k, (base, amp) in enumerate(((0.45, 0.05), (0.6, 0.06), (0.78, 0.05))):
        ridge = base + amp * np.sin(u * rng.uniform(4, 9) + rng.uniform(0, 6))
        tone = np.array([0.9, 0.66, 0.38]) * (1.0 - 0.09 * k)
        dune = tone * (0.9 + 0.15 * np.clip((v - ridge) * 5, 0, 1))[..., None]
        img = _mix(img, dune, _step(ridge - v, aa))
    return img


def _night_sky(u, v, rng, aa):
    img = _mix([0.02, 0.03, 0.12], [0.08, 0.1, 0.28], v)
    stars = np.zeros_like(u)
    for cx, cy, r, b in zip(rng.random(90), rng.random(90), rng.uniform(0.003, 0.008, 90), rng.uniform(0.5, 1, 90)):
        stars = np.maximum(stars, b * _step(np.hypot(u - cx, v - cy) - r, aa))
    mx, my = rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.25)
    moon = _step(np.hypot(u - mx, v - my) - 0.06, aa) * (1 - _step(np.hypot(u - mx - 0.03, v - my + 0.01) - 0.055, aa))
    return _mix(img, [1.0, 0.98, 0.85], np.maximum(stars, moon))


def _kitchen_table(u, v, rng, aa):
    edge = 0.45 + rng.uniform(-0.05, 0.05)
    wall = _mix([0.93, 0.89, 0.78], [0.86, 0.8, 0.68], np.clip(v / edge, 0, 1))
    grain = np.sin((v * 40 + 3 * _value_noise(u, v, 5, 3, rng)) * np.pi) * 0.5 + 0.5
    wood = _mix([0.56, 0.36, 0.2], [0.68, 0.47, 0.28], grain)
    return _mix(wall, wood, _step(edge - v, aa))


_DRAW = {
    "plain": _plain, "brick_wall": _brick_wall, "grass": _grass, "beach": _beach, "jungle": _jungle,
    "snow": _snow, "city_street": _city_street, "ocean": _ocean, "desert": _desert,
    "night_sky": _night_sky, "kitchen_table": _kitchen_table,
}  # fmt: skip


@lru_cache(maxsize=256)
def background(scene: str, variant: int, size: int) -> np.ndarray:
    """The scene as a read-only float32 (size, size, 3) array in [0, 1]."""
    hi = 2 * size
    c = (np.arange(hi) + 0.5) / hi
    u, v = np.meshgrid(c, c)
    rng = np.random.default_rng([zlib.crc32(scene.encode()), int(variant), 0xBAC6])
    img = _DRAW[scene](u, v, rng, 1.0 / hi)
    img = np.clip(img, 0.0, 1.0).reshape(size, 2, size, 2, 3).mean(axis=(1, 3)).astype(np.float32)
    img.setflags(write=False)
    return img
