"""Body outlines as polar radius tables, and the signed distance to them.

Every shape class is star-shaped about its centre, so an outline is one radius per angle r(θ).
A subject's outline = its class outline, stretched by its aspect, times a low-frequency wobble,
scaled so that max r = 1. Angles are in the body frame with y pointing down (top = -π/2).
The signed distance is first-order exact near the outline: (ρ - r(θ)) / sqrt(1 + (r'(θ)/r(θ))²).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from suti.world.traits import WOBBLE_HARMONICS, Subject

TABLE_N = 1024
THETA = np.linspace(-np.pi, np.pi, TABLE_N, endpoint=False)


@dataclass(frozen=True)
class Outline:
    """Radius r(θ) and its derivative on THETA; r is scaled so that its max is 1."""

    radius: np.ndarray
    slope: np.ndarray

    def at(self, theta: np.ndarray) -> np.ndarray:
        """Outline radius at arbitrary angles (linear interpolation, periodic)."""
        return np.interp(theta, THETA, self.radius, period=2 * np.pi)

    def signed_distance(self, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        """Signed distance (body units, < 0 inside) of points in the body frame."""
        rho = np.hypot(qx, qy)
        theta = np.arctan2(qy, qx)
        r = np.interp(theta, THETA, self.radius, period=2 * np.pi)
        dr = np.interp(theta, THETA, self.slope, period=2 * np.pi)
        return (rho - r) / np.sqrt(1.0 + (dr / r) ** 2)


def _polar_from_points(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Radius table of a dense closed curve that is star-shaped about the origin."""
    ang = np.arctan2(y, x)
    order = np.argsort(ang)
    return np.interp(THETA, ang[order], np.hypot(x, y)[order], period=2 * np.pi)


def _polygon_points(vertices: list[tuple[float, float]], per_edge: int = 256) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices + vertices[:1], dtype=np.float64)
    t = np.linspace(0, 1, per_edge, endpoint=False)[:, None]
    pts = np.concatenate([v[i] + t * (v[i + 1] - v[i]) for i in range(len(vertices))])
    return pts[:, 0], pts[:, 1]


def _circle_union_radius(circles: list[tuple[float, float, float]]) -> np.ndarray:
    """Radius table of a union of discs (cx, cy, r) that is star-shaped about the origin."""
    dx, dy = np.cos(THETA), np.sin(THETA)
    best = np.zeros(TABLE_N)
    for cx, cy, r in circles:
        b = dx * cx + dy * cy
        disc = b * b - (cx * cx + cy * cy - r * r)
        exit_t = np.where(disc >= 0, b + np.sqrt(np.maximum(disc, 0.0)), 0.0)
        best = np.maximum(best, exit_t)
    return best


@lru_cache(maxsize=None)
def canonical_radius(shape: str) -> np.ndarray:
    """The class outline before any subject detail (read-only array, max 1)."""
    up = -np.pi / 2  # the top of the body
    if shape == "ball":
        r = np.ones(TABLE_N)
    elif shape == "star":
        verts = []
        for k in range(10):
            a = up + k * np.pi / 5
            rad = 1.0 if k % 2 == 0 else 0.47
            verts.append((rad * np.cos(a), rad * np.sin(a)))
        r = _polar_from_points(*_polygon_points(verts))
    elif shape == "diamond":
        r = _polar_from_points(*_polygon_points([(0.0, -1.0), (0.7, 0.0), (0.0, 1.0), (-0.7, 0.0)]))
    elif shape == "flower":
        r = 0.52 + 0.48 * np.abs(np.cos(2.5 * (THETA - up))) ** 0.7
    elif shape == "cloud":
        r = _circle_union_radius(
            [(-0.55, 0.18, 0.36), (0.0, 0.2, 0.4), (0.55, 0.18, 0.36), (-0.25, -0.18, 0.42), (0.3, -0.12, 0.38)]
        )
    elif shape == "heart":
        t = np.linspace(0, 2 * np.pi, 8192, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) - 2.5
        r = _polar_from_points(x, y)
    elif shape == "drop":
        t = np.linspace(0, 2 * np.pi, 8192, endpoint=False)
        r = _polar_from_points(1.15 * np.sin(t) * np.sin(t / 2), -np.cos(t) - 0.4)
    elif shape == "leaf":
        half_width = 0.62
        rad = 0.5 * (half_width + 1.0 / half_width)  # discs through both tips (0, ±1)
        c = rad - half_width
        phi = np.linspace(-np.arcsin(1.0 / rad), np.arcsin(1.0 / rad), 4096)
        x = np.concatenate([-c + rad * np.cos(phi), c - rad * np.cos(phi)])
        y = np.concatenate([rad * np.sin(phi), -rad * np.sin(phi)])
        tilt = np.pi / 4  # leaves lie on the diagonal
        x, y = x * np.cos(tilt) - y * np.sin(tilt), x * np.sin(tilt) + y * np.cos(tilt)
        r = _polar_from_points(x, y)
    else:
        from suti.errors import InputError

        raise InputError(f"unknown shape {shape!r}")
    r = r / r.max()
    r.setflags(write=False)
    return r


@lru_cache(maxsize=8192)
def _outline(shape: str, aspect: float, wobble: tuple, wobble_phase: tuple) -> Outline:
    r0 = canonical_radius(shape)
    r = _polar_from_points(aspect * r0 * np.cos(THETA), r0 * np.sin(THETA) / aspect)
    bump = np.ones(TABLE_N)
    for k, amp, phase in zip(WOBBLE_HARMONICS, wobble, wobble_phase):
        bump += amp * np.cos(k * THETA + phase)
    r = r * bump
    r = r / r.max()
    step = THETA[1] - THETA[0]
    slope = (np.roll(r, -1) - np.roll(r, 1)) / (2 * step)
    r.setflags(write=False)
    slope.setflags(write=False)
    return Outline(radius=r, slope=slope)


def outline_of(subject: Subject) -> Outline:
    """The subject's own outline (cached)."""
    return _outline(subject.shape, subject.aspect, subject.wobble, subject.wobble_phase)


def mark_center(subject: Subject) -> tuple[float, float]:
    """Where the subject's mark sits, in the body frame (always well inside the outline)."""
    r = float(outline_of(subject).at(np.array([subject.mark_angle]))[0])
    rad = subject.mark_frac * r
    return rad * float(np.cos(subject.mark_angle)), rad * float(np.sin(subject.mark_angle))
