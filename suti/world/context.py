"""Contexts: what a prompt controls, one field group per SuTI skill.

The default `Context()` is the identity context (plain background, photo, own colour, nothing worn,
upright, centred, normal size). Each skill changes one group of fields:
recontextualization -> scene, stylization -> style, attribute -> recolor,
accessorization -> accessory, view -> rotation / flip / scale / position.
`variant` picks one of a few layouts of the same scene and is never captioned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from suti.errors import InputError
from suti.world.traits import COLORS, Subject, draw_index

SCENES: tuple[str, ...] = (
    "plain", "brick_wall", "grass", "beach", "jungle", "snow",
    "city_street", "ocean", "desert", "night_sky", "kitchen_table",
)  # fmt: skip
STYLES: tuple[str, ...] = ("photo", "sketch", "grayscale", "pixel", "watercolor", "cartoon")
ACCESSORIES: tuple[str, ...] = ("hat", "scarf", "glasses", "bowtie")
ROTATIONS: tuple[int, ...] = (0, 30, -30, 90, 180)  # degrees, counter-clockwise on screen
SCALES: tuple[str, ...] = ("normal", "small", "large")
POSITIONS: tuple[str, ...] = ("center", "left", "right")
N_VARIANTS = 4
# sample_context's mix: chances of a recolour, a non-photo style, a worn accessory, and of each view change
# (rotation, flip, scale, position: drawn independently)
RECOLOR_P, STYLE_P, ACCESSORY_P, VIEW_P = 0.15, 0.3, 0.25, 0.15
SKILLS: tuple[str, ...] = ("recontextualization", "stylization", "attribute", "accessorization", "view")


@dataclass(frozen=True)
class Context:
    """What a caption controls. Defaults = the identity context."""

    scene: str = "plain"
    style: str = "photo"
    recolor: str = ""  # "" keeps the subject's own colour
    accessory: str = ""  # "" wears nothing
    rotation: int = 0
    flip: bool = False
    scale: str = "normal"
    position: str = "center"
    variant: int = 0  # which layout of the scene (not captioned)

    def __post_init__(self) -> None:
        _check("scene", self.scene, SCENES)
        _check("style", self.style, STYLES)
        _check("recolor colour", self.recolor, ("",) + tuple(COLORS))
        _check("accessory", self.accessory, ("",) + ACCESSORIES)
        _check("rotation", self.rotation, ROTATIONS)
        _check("scale", self.scale, SCALES)
        _check("position", self.position, POSITIONS)
        if not isinstance(self.flip, (bool, np.bool_)):
            raise InputError(f"flip must be true or false, got {self.flip!r}")
        if isinstance(self.variant, bool) or not isinstance(self.variant, (int, np.integer)):
            raise InputError(f"variant must be an integer, got {self.variant!r}")
        if not 0 <= self.variant < N_VARIANTS:
            raise InputError(f"variant must be in 0..{N_VARIANTS - 1}, got {self.variant}")

    @property
    def skills(self) -> tuple[str, ...]:
        """The skills this context exercises (empty for the identity context)."""
        used = {
            "recontextualization": self.scene != "plain",
            "stylization": self.style != "photo",
            "attribute": self.recolor != "",
            "accessorization": self.accessory != "",
            "view": self.rotation != 0 or self.flip or self.scale != "normal" or self.position != "center",
        }
        return tuple(s for s in SKILLS if used[s])

    def to_dict(self) -> dict:
        """Plain JSON-able dict of all fields."""
        d = asdict(self)
        d["flip"] = bool(d["flip"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Context:
        """Inverse of `to_dict`; unknown keys are an error, missing keys take defaults."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown context field(s): {', '.join(unknown)}")
        return cls(**d)


def _check(what: str, value, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise InputError(f"unknown {what} {value!r}; choose from {shown}")


def skill_contexts(skill: str, subject: Subject | None = None) -> list[Context]:
    """Every single-skill context of one skill, in a fixed order (recolour skips the own colour)."""
    base = Context()
    if skill == "recontextualization":
        return [replace(base, scene=s) for s in SCENES if s != "plain"]
    if skill == "stylization":
        return [replace(base, style=s) for s in STYLES if s != "photo"]
    if skill == "attribute":
        own = subject.color if subject is not None else None
        return [replace(base, recolor=c) for c in COLORS if c != own]
    if skill == "accessorization":
        return [replace(base, accessory=a) for a in ACCESSORIES]
    if skill == "view":
        out = [replace(base, rotation=r) for r in ROTATIONS if r != 0]
        out.append(replace(base, flip=True))
        out += [replace(base, scale=s) for s in SCALES if s != "normal"]
        out += [replace(base, position=p) for p in POSITIONS if p != "center"]
        return out
    raise InputError(f"unknown skill {skill!r}; choose from {', '.join(SKILLS)}")


def for_skill(skill: str, rng: np.random.Generator, subject: Subject | None = None) -> Context:
    """One random context that exercises exactly this skill."""
    options = skill_contexts(skill, subject)
    return options[draw_index(rng, len(options))]


def sample_context(
    rng: np.random.Generator,
    subject: Subject,
    recolors: tuple[str, ...] | None = None,
    styles: tuple[str, ...] = STYLES,
    recolor_p: float = RECOLOR_P,
    style_p: float = STYLE_P,
    accessory_p: float = ACCESSORY_P,
    view_p: float = VIEW_P,
) -> Context:
    """A random context mixing skills, for datasets.

    `recolors` limits the recolour targets (the split rules pass the allowed ones); the subject's
    own colour is never a target. `styles` limits the styles drawn. `recolor_p`, `style_p`, `accessory_p`
    and `view_p` are the chances of a recolour, of a non-photo style, of a worn accessory and of each of
    the four view changes (defaults: the datasets' mix).
    """
    for s in styles:
        _check("style", s, STYLES)
    targets = [c for c in (recolors if recolors is not None else tuple(COLORS)) if c != subject.color]
    scene = SCENES[draw_index(rng, len(SCENES), 1)] if rng.random() < 0.75 else "plain"
    style = "photo"
    if "photo" not in styles or (rng.random() < style_p and len(styles) > 1):
        non_photo = [s for s in styles if s != "photo"] or list(styles)
        style = non_photo[draw_index(rng, len(non_photo))]
    recolor = targets[draw_index(rng, len(targets))] if targets and rng.random() < recolor_p else ""
    accessory = ACCESSORIES[draw_index(rng, len(ACCESSORIES))] if rng.random() < accessory_p else ""
    rotation = ROTATIONS[draw_index(rng, len(ROTATIONS), 1)] if rng.random() < view_p else 0
    flip = bool(rng.random() < view_p)
    scale = SCALES[draw_index(rng, len(SCALES), 1)] if rng.random() < view_p else "normal"
    position = POSITIONS[draw_index(rng, len(POSITIONS), 1)] if rng.random() < view_p else "center"
    variant = draw_index(rng, N_VARIANTS)
    return Context(scene, style, recolor, accessory, rotation, flip, scale, position, variant)
