"""Subjects: nameable coarse traits plus unnameable details, all derived from (subject id, world seed).

The coarse traits (shape, colour, pattern) are what a caption can say. The details (outline
wobble, aspect, exact hue, pattern frequency/angle/phase, ink colour, a small mark) are what only
pictures of the subject can convey.

Splits say which subjects and which trait combinations training may see:
- "test_combo": subjects whose (shape, colour) pair is in HELD_OUT_COMBOS. Training never shows such
  a pair: not as a subject's own traits, not as a recolour target (a train star is never painted
  blue), not in an unrelated image or an off-topic caption on a train page.
- "test_subject": a fixed fraction of the remaining subject ids, chosen by a hash of (id, seed).
- "train": the rest.
Every subject on a page (main, unrelated, caption-only) comes from the page's own split.
"""

from __future__ import annotations

import colorsys
import hashlib
from dataclasses import dataclass

import numpy as np

from suti.errors import InputError

SHAPES: tuple[str, ...] = ("ball", "star", "heart", "drop", "diamond", "flower", "leaf", "cloud")

# Named colours as canonical (hue, saturation, value). Chosen to stay distinct after jitter.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.995, 0.80, 0.85),
    "orange": (0.075, 0.85, 0.95),
    "yellow": (0.145, 0.80, 0.95),
    "green": (0.33, 0.70, 0.68),
    "blue": (0.60, 0.75, 0.88),
    "purple": (0.77, 0.58, 0.68),
    "pink": (0.92, 0.42, 0.97),
    "brown": (0.07, 0.62, 0.50),
}

PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checkered", "ringed")

HSV_JITTER = (0.018, 0.10, 0.09)  # max |offset| for hue, saturation, value
WOBBLE_HARMONICS = (2, 3, 4, 5)
_SUBJECT_STREAM = 0x5B1EC7


@dataclass(frozen=True)
class Subject:
    """One subject. Build it with `make_subject(subject_id, seed)`; never by hand."""

    subject_id: int
    seed: int
    shape: str
    color: str
    pattern: str
    # --- unnameable details ---
    hsv_jitter: tuple[float, float, float]
    aspect: float  # x stretch (y gets 1/aspect)
    wobble: tuple[float, ...]  # relative amplitude per harmonic in WOBBLE_HARMONICS
    wobble_phase: tuple[float, ...]
    pattern_freq: float  # cycles per local unit (body radius = 1)
    pattern_angle: float  # radians
    pattern_phase: tuple[float, float]
    ink_rgb: tuple[float, float, float]
    mark_angle: float  # where the mark sits: polar angle in the body frame ...
    mark_frac: float  # ... and fraction of the outline radius there
    mark_radius: float
    mark_rgb: tuple[float, float, float]

    @property
    def coarse(self) -> dict[str, str]:
        """The nameable traits: what a caption says about this subject."""
        return {"shape": self.shape, "color": self.color, "pattern": self.pattern}

    def body_rgb(self, color: str | None = None) -> tuple[float, float, float]:
        """Body colour in [0, 1]: the named colour (own by default) with this subject's exact jitter."""
        name = self.color if color is None else color
        if name not in COLORS:
            raise InputError(f"unknown colour {name!r}; choose from {', '.join(COLORS)}")
        return _jittered_rgb(COLORS[name], self.hsv_jitter)


def _jittered_rgb(hsv: tuple[float, float, float], jitter: tuple[float, float, float]) -> tuple[float, float, float]:
    h = (hsv[0] + jitter[0]) % 1.0
    s = float(np.clip(hsv[1] + jitter[1], 0.0, 1.0))
    v = float(np.clip(hsv[2] + jitter[2], 0.0, 1.0))
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def luminance(rgb: tuple[float, float, float]) -> float:
    """Rec. 601 luma of an RGB triple in [0, 1]."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def draw_index(rng: np.random.Generator, high: int, low: int = 0) -> int:
    """A uniform integer in [low, high) from one float draw (much faster than rng.integers)."""
    return low + min(int(rng.random() * (high - low)), high - low - 1)


def subject_rng(subject_id: int, seed: int) -> np.random.Generator:
    """The random stream that defines one subject (independent of every other stream)."""
    return np.random.default_rng([int(seed), int(subject_id), _SUBJECT_STREAM])


def coarse_traits(subject_id: int, seed: int = 0) -> tuple[str, str, str]:
    """(shape, colour, pattern) of a subject, without building its details."""
    return _draw_coarse(subject_rng(subject_id, seed))


def _draw_coarse(rng: np.random.Generator) -> tuple[str, str, str]:
    """The first three draws of a subject's stream (make_subject and coarse_traits share them)."""
    shape = SHAPES[draw_index(rng, len(SHAPES))]
    color = tuple(COLORS)[draw_index(rng, len(COLORS))]
    pattern = PATTERNS[draw_index(rng, len(PATTERNS))]
    return shape, color, pattern


def make_subject(subject_id: int, seed: int = 0) -> Subject:
    """The subject with this id in the world of this seed. Same inputs, same subject."""
    if isinstance(subject_id, bool) or not isinstance(subject_id, (int, np.integer)) or subject_id < 0:
        raise InputError(f"subject id must be a non-negative integer, got {subject_id!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"world seed must be a non-negative integer, got {seed!r}")
    rng = subject_rng(subject_id, seed)
    shape, color, pattern = _draw_coarse(rng)
    jitter = tuple(float(rng.uniform(-m, m)) for m in HSV_JITTER)
    aspect = float(np.exp(rng.uniform(-0.13, 0.13)))
    wobble = tuple(float(rng.uniform(0.02, 0.06) / k**0.5) for k in WOBBLE_HARMONICS)
    wobble_phase = tuple(float(rng.uniform(0, 2 * np.pi)) for _ in WOBBLE_HARMONICS)
    pattern_freq = float(rng.uniform(1.5, 2.6))
    pattern_angle = float(rng.uniform(0, np.pi))
    pattern_phase = (float(rng.uniform(0, 1)), float(rng.uniform(0, 1)))

    body = _jittered_rgb(COLORS[color], jitter)
    ink = _ink_for(body, rng)
    mark_angle = float(rng.uniform(-np.pi, np.pi))
    mark_frac = float(rng.uniform(0.2, 0.5))
    mark_radius = float(rng.uniform(0.13, 0.18))
    mark_rgb = _mark_color(body, ink, rng)
    return Subject(
        subject_id=int(subject_id),
        seed=int(seed),
        shape=shape,
        color=color,
        pattern=pattern,
        hsv_jitter=jitter,
        aspect=aspect,
        wobble=wobble,
        wobble_phase=wobble_phase,
        pattern_freq=pattern_freq,
        pattern_angle=pattern_angle,
        pattern_phase=pattern_phase,
        ink_rgb=ink,
        mark_angle=mark_angle,
        mark_frac=mark_frac,
        mark_radius=mark_radius,
        mark_rgb=mark_rgb,
    )


def _ink_for(body: tuple[float, float, float], rng: np.random.Generator) -> tuple[float, float, float]:
    """Pattern ink: light on dark bodies, dark on light ones, with a faint tint of its own."""
    hue = rng.uniform(0, 1)
    if luminance(body) < 0.55:
        hsv = (hue, rng.uniform(0.0, 0.15), rng.uniform(0.90, 1.0))
    else:
        hsv = (hue, rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.30))
    return tuple(float(c) for c in colorsys.hsv_to_rgb(*hsv))


def _mark_color(
    body: tuple[float, float, float], ink: tuple[float, float, float], rng: np.random.Generator
) -> tuple[float, float, float]:
    """A saturated mark colour whose hue is far from the body's and whose luma differs from both."""
    body_h = colorsys.rgb_to_hsv(*body)[0]
    for _ in range(16):
        hue = (body_h + rng.uniform(0.3, 0.7)) % 1.0
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 0.9), rng.uniform(0.35, 1.0))
        if abs(luminance(rgb) - luminance(body)) > 0.12 and abs(luminance(rgb) - luminance(ink)) > 0.12:
            break
    return tuple(float(c) for c in rgb)


# --- splits ------------------------------------------------------------------------------------

SPLITS: tuple[str, ...] = ("train", "test_subject", "test_combo")
# One pair per shape/colour at most, so every shape and every colour still occurs in training.
HELD_OUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {("star", "blue"), ("heart", "green"), ("drop", "red"), ("flower", "yellow"), ("cloud", "pink"), ("leaf", "orange")}
)
TEST_SUBJECT_FRACTION = 0.1


def is_held_out_combo(shape: str, color: str) -> bool:
    """True if training must never show this (shape, colour) pair."""
    return (shape, color) in HELD_OUT_COMBOS


def split_of(subject_id: int, seed: int = 0) -> str:
    """The split a subject belongs to (a pure function of id and world seed)."""
    shape, color, _ = coarse_traits(subject_id, seed)
    if is_held_out_combo(shape, color):
        return "test_combo"
    if _unit_hash(subject_id, seed) < TEST_SUBJECT_FRACTION:
        return "test_subject"
    return "train"


def _unit_hash(subject_id: int, seed: int) -> float:
    """A fixed pseudo-random number in [0, 1) per (id, seed)."""
    digest = hashlib.blake2b(f"split:{int(seed)}:{int(subject_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def allowed_recolors(subject: Subject, split: str) -> tuple[str, ...]:
    """Recolour targets a context may use for this subject on a page of this split."""
    check_split(split)
    targets = [c for c in COLORS if c != subject.color]
    if split == "train":
        targets = [c for c in targets if not is_held_out_combo(subject.shape, c)]
    return tuple(targets)


def draw_subject_id(rng: np.random.Generator, split: str, seed: int, low: int, high: int) -> int:
    """A random subject id in [low, high) that belongs to `split`."""
    check_split(split)
    for _ in range(10_000):
        sid = draw_index(rng, high, low)
        if split_of(sid, seed) == split:
            return sid
    raise RuntimeError(f"found no subject of split {split!r} in [{low}, {high})")


def check_split(split: str) -> str:
    """The split name, or InputError if it is not one of SPLITS."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    return split
