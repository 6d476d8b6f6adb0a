"""Attribute probes: what a grader reads off an image, field by field.

Context fields (what a prompt controls): scene, style, accessory, scale, position, and the pose
(rotation x flip, read relative to a canonical render of the subject, because a mirrored or turned
subject can only be told from an upright one by knowing the subject). Identity traits: shape,
pattern, and the displayed body colour (the subject's own colour, or the recolour target).

Observability (what no grader, human or model, can read, is not graded):
- colour is not graded in styles that remove hue (grayscale, sketch);
- pose and pattern are graded up to equivalence: values whose ground-truth render differs from the
  prompted render by less than EQUIV_RMS (a symmetric subject turned 180 degrees, dots lost in pixel
  art) count as the prompted value. `equivalent_values` finds them by rendering them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from suti.world.context import (
    ACCESSORIES,
    POSITIONS,
    ROTATIONS,
    SCALES,
    SCENES,
    STYLES,
    Context,
)
from suti.world.render import render
from suti.world.traits import COLORS, PATTERNS, SHAPES, Subject

POSES: tuple[tuple[int, bool], ...] = tuple((r, f) for f in (False, True) for r in ROTATIONS)
FIELDS: dict[str, tuple] = {
    "scene": SCENES,
    "style": STYLES,
    "accessory": ("",) + ACCESSORIES,
    "scale": SCALES,
    "position": POSITIONS,
    "shape": SHAPES,
    "pattern": PATTERNS,
    "color": tuple(COLORS),
    "pose": POSES,  # read from (image, canonical reference) by PoseNet
}
IMAGE_FIELDS = tuple(f for f in FIELDS if f != "pose")  # read from the image alone
CONTEXT_FIELDS = ("scene", "style", "accessory", "pose", "scale", "position")
TRAIT_FIELDS = ("shape", "pattern", "color")
TRAIT_NET_FIELDS = ("shape", "pattern")  # read by TraitNet (full-resolution texture), not PerceptionNet
COLOURLESS_STYLES = ("grayscale", "sketch")
EQUIV_FIELDS = ("pose", "pattern")
EQUIV_RMS = 4.0  # grey levels (of 255) at the grader size: below this two renders count as the same
UNGRADED = -1


def displayed_color(subject: Subject, ctx: Context) -> str | None:
    """The body colour the image shows, or None when the style removes hue."""
    if ctx.style in COLOURLESS_STYLES:
        return None
    return ctx.recolor or subject.color


def labels_for(subject: Subject, ctx: Context) -> dict[str, int]:
    """Class index per field for a render of `subject` in `ctx` (UNGRADED where not observable)."""
    colour = displayed_color(subject, ctx)
    return {
        "scene": SCENES.index(ctx.scene),
        "style": STYLES.index(ctx.style),
        "accessory": FIELDS["accessory"].index(ctx.accessory),
        "scale": SCALES.index(ctx.scale),
        "position": POSITIONS.index(ctx.position),
        "shape": SHAPES.index(subject.shape),
        "pattern": PATTERNS.index(subject.pattern),
        "color": UNGRADED if colour is None else FIELDS["color"].index(colour),
        "pose": POSES.index((ctx.rotation, bool(ctx.flip))),
    }


def text_fields(ctx: Context) -> tuple[str, ...]:
    """Fields that judge text fidelity for a prompt: the context, plus the colour when it is recoloured."""
    colour = ("color",) if ctx.recolor and ctx.style not in COLOURLESS_STYLES else ()
    return CONTEXT_FIELDS + colour


def trait_fields(ctx: Context) -> tuple[str, ...]:
    """Identity traits checked for subject fidelity (own colour only when shown and not recoloured)."""
    colour = ("color",) if not ctx.recolor and ctx.style not in COLOURLESS_STYLES else ()
    return ("shape", "pattern") + colour


def _variant(subject: Subject, ctx: Context, field: str, value) -> tuple[Subject, Context]:
    if field == "pose":
        return subject, replace(ctx, rotation=value[0], flip=value[1])
    if field == "pattern":
        return replace(subject, pattern=value), ctx
    raise ValueError(f"no equivalence test for field {field!r}")


def equivalent_values(subject: Subject, ctx: Context, field: str, size: int = 32,
                      tol: float = EQUIV_RMS) -> tuple[int, ...]:  # fmt: skip
    """Indices of `field` values whose render looks like the true one (RMS < tol grey levels)."""
    truth = labels_for(subject, ctx)[field]
    if field not in EQUIV_FIELDS:
        return (truth,)
    ref = np.asarray(render(subject, ctx, size), np.float32)
    same = []
    for i, value in enumerate(FIELDS[field]):
        if i == truth:
            same.append(i)
            continue
        other = np.asarray(render(*_variant(subject, ctx, field, value), size), np.float32)
        if np.sqrt(np.mean((other - ref) ** 2)) < tol:
            same.append(i)
    return tuple(same)


def field_probability(probs: np.ndarray, accepted: tuple[int, ...]) -> float:
    """P(field shows an accepted value): the probe's mass on the equivalence set."""
    return float(np.clip(probs[list(accepted)].sum(), 0.0, 1.0))


def probe_losses(logits: dict, labels: dict, fields: tuple[str, ...] = IMAGE_FIELDS):
    """Mean cross-entropy per field over the graded rows; returns (total, {field: loss})."""
    import torch.nn.functional as F

    parts = {}
    for field in fields:
        if (labels[field] != UNGRADED).any():  # a batch without a graded row has no loss for the field
            parts[field] = F.cross_entropy(logits[field], labels[field], ignore_index=UNGRADED)
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def accuracy(probs: dict[str, np.ndarray], accepted: list[dict[str, tuple[int, ...]]]) -> dict[str, float]:
    """Per-field accuracy: the argmax lies in the accepted set; rows with an empty set are skipped."""
    out = {}
    for field, p in probs.items():
        hits = [int(np.argmax(p[i])) in acc[field] for i, acc in enumerate(accepted) if acc.get(field)]
        out[field] = float(np.mean(hits)) if hits else float("nan")
    return out


def accepted_sets(subject: Subject, ctx: Context, size: int = 32, tol: float = EQUIV_RMS) -> dict[str, tuple]:
    """Accepted value indices for every graded field of one render (empty tuple = not graded)."""
    labels = labels_for(subject, ctx)
    out = {}
    for field in FIELDS:
        if labels[field] == UNGRADED:
            out[field] = ()
        elif field in EQUIV_FIELDS:
            out[field] = equivalent_values(subject, ctx, field, size, tol)
        else:
            out[field] = (labels[field],)
    return out
