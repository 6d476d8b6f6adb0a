"""What is painted on and worn by the body: pattern, mark, accessories.

Everything is a signed distance in the body frame (body radius 1, y down), turned into anti-aliased
coverage with `coverage(d, px)`, where px is the size of one pixel in body units.
"""

from __future__ import annotations

import numpy as np

from suti.world.shapes import Outline, mark_center
from suti.world.traits import Subject

Array = np.ndarray


def coverage(d: Array, px: float) -> Array:
    """Analytic anti-aliasing: fraction of a pixel covered by the region d < 0."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def _rotated(subject: Subject, qx: Array, qy: Array) -> tuple[Array, Array]:
    c, s = np.cos(subject.pattern_angle), np.sin(subject.pattern_angle)
    f = subject.pattern_freq
    return (qx * c + qy * s) * f + subject.pattern_phase[0], (-qx * s + qy * c) * f + subject.pattern_phase[1]


def _band(u: Array, freq: float, half_width: float = 0.25) -> Array:
    """Distance (body units) to periodic bands of `half_width` cycles around half-integers of u."""
    return (np.abs(u - np.floor(u) - 0.5) - half_width) / freq


def pattern_coverage(subject: Subject, qx: Array, qy: Array, px: float) -> Array:
    """Where the pattern ink covers the body (0 everywhere for solid subjects)."""
    f = subject.pattern_freq
    if subject.pattern == "solid":
        return np.zeros_like(qx)
    if subject.pattern == "striped":
        u, _ = _rotated(subject, qx, qy)
        return coverage(_band(u, f), px)
    if subject.pattern == "dotted":
        u, v = _rotated(subject, qx, qy)
        du, dv = u - np.floor(u) - 0.5, v - np.floor(v) - 0.5
        return coverage((np.hypot(du, dv) - 0.28) / f, px)
    if subject.pattern == "checkered":
        u, v = _rotated(subject, qx, qy)
        wu, wv = 2 * u, 2 * v  # cells of half a cycle
        edge = np.minimum(np.abs(wu - np.round(wu)), np.abs(wv - np.round(wv))) / (2 * f)
        on = (np.floor(wu) + np.floor(wv)) % 2 == 1
        return coverage(np.where(on, -edge, edge), px)
    if subject.pattern == "ringed":
        ox, oy = (subject.pattern_phase[0] - 0.5) * 0.6, (subject.pattern_phase[1] - 0.5) * 0.6
        return coverage(_band(np.hypot(qx - ox, qy - oy) * f, f), px)
    raise ValueError(f"unknown pattern {subject.pattern!r}")


def mark_coverage(subject: Subject, qx: Array, qy: Array, px: float) -> Array:
    """The subject's small mark: a disc at its own place on the body."""
    mx, my = mark_center(subject)
    return coverage(np.hypot(qx - mx, qy - my) - subject.mark_radius, px)


# --- accessories -------------------------------------------------------------------------------

INK = (0.06, 0.06, 0.08)


def _box(qx: Array, qy: Array, cx: float, cy: float, hx: float, hy: float, rounding: float = 0.0) -> Array:
    dx = np.abs(qx - cx) - hx + rounding
    dy = np.abs(qy - cy) - hy + rounding
    outside = np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
    return outside + np.minimum(np.maximum(dx, dy), 0.0) - rounding


def _disc(qx: Array, qy: Array, cx: float, cy: float, r: float) -> Array:
    return np.hypot(qx - cx, qy - cy) - r


def _convex(qx: Array, qy: Array, pts: list[tuple[float, float]]) -> Array:
    """Signed distance (exact inside and along edges) to a convex polygon, either orientation."""
    cx = sum(p[0] for p in pts) / len(pts)
    cy = sum(p[1] for p in pts) / len(pts)
    d = np.full_like(qx, -np.inf)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        ex, ey = (x1 - x0), (y1 - y0)
        n = np.hypot(ex, ey)
        sign = 1.0 if ((cx - x0) * ey - (cy - y0) * ex) < 0 else -1.0  # outward normal
        d = np.maximum(d, sign * ((qx - x0) * ey - (qy - y0) * ex) / n)
    return d


class _Layer:
    """Premultiplied colour + alpha accumulated part by part (the 'over' operator)."""

    def __init__(self, shape: tuple[int, int]):
        self.alpha = np.zeros(shape, dtype=np.float32)
        self.color = np.zeros(shape + (3,), dtype=np.float32)

    def over(self, cov: Array, rgb) -> None:
        cov = cov.astype(np.float32)
        rgb = np.asarray(rgb, dtype=np.float32)
        self.color *= (1.0 - cov)[..., None]
        self.color += cov[..., None] * rgb
        self.alpha = self.alpha * (1.0 - cov) + cov

    def outlined(self, d: Array, rgb, px: float, width: float = 0.045) -> None:
        self.over(coverage(d, px), INK)
        self.over(coverage(d + width, px), rgb)


def accessory_layer(accessory: str, outline: Outline, qx: Array, qy: Array, px: float) -> tuple[Array, Array]:
    """(alpha, premultiplied colour) of one accessory in the body frame; alpha is 0 outside it."""
    layer = _Layer(qx.shape)
    if accessory == "":
        return layer.alpha, layer.color
    if accessory == "hat":
        top = float(outline.at(np.array([-np.pi / 2]))[0])
        base = -0.88 * top
        brim = _box(qx, qy, 0.0, base, 0.55, 0.07, 0.035)
        crown = _box(qx, qy, 0.0, base - 0.27, 0.33, 0.27, 0.07)
        layer.outlined(np.minimum(brim, crown), (0.22, 0.2, 0.26), px)
        layer.over(coverage(_box(qx, qy, 0.0, base - 0.1, 0.31, 0.065), px), (0.85, 0.12, 0.18))
    elif accessory == "glasses":
        for side in (-1.0, 1.0):
            lens = _disc(qx, qy, side * 0.3, -0.16, 0.2)
            layer.over(0.45 * coverage(lens, px), (0.75, 0.92, 1.0))
            layer.over(coverage(np.abs(lens) - 0.05, px), INK)
            layer.over(coverage(_box(qx, qy, side * 0.6, -0.2, 0.1, 0.035), px), INK)
        layer.over(coverage(_box(qx, qy, 0.0, -0.17, 0.1, 0.04), px), INK)
    elif accessory == "scarf":
        body = outline.signed_distance(qx, qy)
        band = np.maximum(_box(qx, qy, 0.0, 0.22, 2.0, 0.12), body - 0.07)
        tail = _box(qx, qy, 0.32, 0.46, 0.1, 0.22, 0.04)
        scarf = np.minimum(band, tail)
        layer.outlined(scarf, (0.1, 0.55, 0.6), px)
        stripes = np.maximum(_band(qx * 2.5, 2.5, 0.18), scarf + 0.045)
        layer.over(coverage(stripes, px), (0.96, 0.92, 0.8))
    elif accessory == "bowtie":
        y = 0.4
        left = _convex(qx, qy, [(0.0, y), (-0.32, y + 0.17), (-0.32, y - 0.17)])
        right = _convex(qx, qy, [(0.0, y), (0.32, y - 0.17), (0.32, y + 0.17)])
        layer.outlined(np.minimum(left, right), (0.85, 0.1, 0.2), px)
        layer.outlined(_disc(qx, qy, 0.0, y, 0.085), (0.6, 0.05, 0.12), px, width=0.035)
    else:
        raise ValueError(f"unknown accessory {accessory!r}")
    return layer.alpha, layer.color
