"""Captions: varied phrasing of (coarse traits, context), and the exact inverse.

A caption is lowercase words separated by single spaces, no punctuation. Every field of the context
except `variant` is said by one phrase (or left out when it has its default value), and every phrase
means one thing, so `parse_caption(caption(s, c, rng))` recovers the traits and the context.
"""

from __future__ import annotations

import numpy as np

from suti.errors import InputError
from suti.world.context import Context
from suti.world.traits import COLORS, SHAPES, Subject, draw_index

STYLE_PREFIX = {
    "photo": ("a photo of", "a picture of", "an image of"),
    "sketch": ("a pencil sketch of", "a line drawing of"),
    "grayscale": ("a black and white photo of", "a grayscale photo of"),
    "pixel": ("a pixel art picture of", "pixel art of"),
    "watercolor": ("a watercolor painting of", "a watercolor of"),
    "cartoon": ("a cartoon drawing of", "a cartoon of"),
}
STYLE_SUFFIX = {
    "photo": ("",),
    "sketch": ("as a pencil sketch", "drawn in pencil"),
    "grayscale": ("in black and white", "in grayscale"),
    "pixel": ("in pixel art style", "as pixel art"),
    "watercolor": ("in watercolor style", "painted in watercolor"),
    "cartoon": ("in cartoon style", "as a cartoon"),
}
SCENE_PHRASES = {
    "plain": ("", "on a plain background", "on a white background"),
    "brick_wall": ("in front of a brick wall", "against a brick wall"),
    "grass": ("on the grass", "in a grassy field"),
    "beach": ("on the beach", "at the beach"),
    "jungle": ("in the jungle", "in a tropical jungle"),
    "snow": ("in the snow", "on a snowy field"),
    "city_street": ("on a city street", "in the city"),
    "ocean": ("in the ocean", "floating on the sea"),
    "desert": ("in the desert", "on desert sand"),
    "night_sky": ("under the night sky", "against a starry night sky"),
    "kitchen_table": ("on a kitchen table", "on the kitchen table"),
}
ACCESSORY_PHRASES = {
    "": ("",),
    "hat": ("wearing a hat", "with a hat"),
    "scarf": ("wearing a scarf", "with a scarf"),
    "glasses": ("wearing glasses", "with glasses"),
    "bowtie": ("wearing a bow tie", "with a bow tie"),
}
RECOLOR_PHRASES = ("painted {}", "colored {}")
ROTATION_PHRASES = {
    0: ("",),
    30: ("tilted to the left", "leaning left"),
    -30: ("tilted to the right", "leaning right"),
    90: ("lying on its side", "turned on its side"),
    180: ("upside down", "turned upside down"),
}
FLIP_PHRASES = {False: ("",), True: ("mirrored", "flipped horizontally")}
POSITION_PHRASES = {
    "center": ("",),
    "left": ("on the left side", "in the left part of the picture"),
    "right": ("on the right side", "in the right part of the picture"),
}
SCALE_WORDS = {"normal": ("",), "small": ("small", "tiny"), "large": ("large", "big")}
PATTERN_WORDS = {
    "solid": ("", "solid"),
    "striped": ("striped",),
    "dotted": ("dotted", "polka dot"),
    "checkered": ("checkered", "checked"),
    "ringed": ("ringed", "ring patterned"),
}
FILLER = ("a", "an")
# Clause orders; "prefix" templates open with the style, "suffix" templates end with it.
TEMPLATES = (
    ("prefix", "np", "accessory", "scene", "view"),
    ("prefix", "np", "scene", "accessory", "view"),
    ("prefix", "np", "view", "accessory", "scene"),
    ("np", "accessory", "scene", "view", "suffix"),
    ("np", "scene", "view", "accessory", "suffix"),
)


def _pick(options: tuple[str, ...], rng: np.random.Generator | None) -> str:
    return options[0] if rng is None else options[draw_index(rng, len(options))]


def caption(subject: Subject, context: Context | None = None, rng: np.random.Generator | None = None,
            template: int | None = None) -> str:  # fmt: skip
    """A caption of the subject's coarse traits in the context.

    rng=None gives the canonical phrasing (first template, first synonym); an rng varies templates
    and synonyms. `template` forces one of TEMPLATES.
    """
    context = context if context is not None else Context()
    if template is None:
        template = 0 if rng is None else draw_index(rng, len(TEMPLATES))
    if not 0 <= template < len(TEMPLATES):
        raise InputError(f"template must be in 0..{len(TEMPLATES) - 1}, got {template}")
    noun = [_pick(SCALE_WORDS[context.scale], rng), subject.color, _pick(PATTERN_WORDS[subject.pattern], rng),
            subject.shape]  # fmt: skip
    if context.recolor:
        noun.append(_pick(RECOLOR_PHRASES, rng).format(context.recolor))
    noun_text = " ".join(w for w in noun if w)
    article = "an" if noun_text[0] in "aeiou" else "a"
    view = [_pick(ROTATION_PHRASES[context.rotation], rng), _pick(FLIP_PHRASES[bool(context.flip)], rng),
            _pick(POSITION_PHRASES[context.position], rng)]  # fmt: skip
    if rng is not None:
        view = [view[i] for i in rng.permutation(len(view))]
    clauses = {
        "prefix": _pick(STYLE_PREFIX[context.style], rng),
        "suffix": _pick(STYLE_SUFFIX[context.style], rng),
        "np": f"{article} {noun_text}",
        "accessory": _pick(ACCESSORY_PHRASES[context.accessory], rng),
        "scene": _pick(SCENE_PHRASES[context.scene], rng),
        "view": " ".join(v for v in view if v),
    }
    return " ".join(clauses[name] for name in TEMPLATES[template] if clauses[name])


def _phrase_table() -> dict[tuple[str, ...], tuple[str, object]]:
    """Every phrase a caption can hold, as token tuple -> (field, value)."""
    entries: list[tuple[str, str, object]] = []
    for field, table in (("style", STYLE_PREFIX), ("style", STYLE_SUFFIX), ("scene", SCENE_PHRASES),
                         ("accessory", ACCESSORY_PHRASES), ("rotation", ROTATION_PHRASES),
                         ("flip", FLIP_PHRASES), ("position", POSITION_PHRASES), ("scale", SCALE_WORDS),
                         ("pattern", PATTERN_WORDS)):  # fmt: skip
        entries += [(p, field, value) for value, phrases in table.items() for p in phrases]
    entries += [(c, "color", c) for c in COLORS] + [(s, "shape", s) for s in SHAPES]
    entries += [(p.format(c), "recolor", c) for p in RECOLOR_PHRASES for c in COLORS]
    table: dict[tuple[str, ...], tuple[str, object]] = {}
    for phrase, field, value in entries:
        key = tuple(phrase.split())
        if key and table.setdefault(key, (field, value)) != (field, value):
            raise RuntimeError(f"caption phrase {phrase!r} has two meanings")
    return table


_TABLE = _phrase_table()
_MAX_LEN = max(len(k) for k in _TABLE)
_DEFAULTS = {"style": "photo", "scene": "plain", "accessory": "", "rotation": 0, "flip": False,
             "position": "center", "scale": "normal", "pattern": "solid", "recolor": ""}  # fmt: skip


def parse_caption(text: str) -> dict:
    """Traits and context fields said by a world caption (defaults for what it leaves out).

    Returns a dict with shape, color, pattern and every Context field but `variant`.
    Raises InputError on words or phrases no world caption holds.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError("caption is empty")
    tokens = text.split()
    found: dict[str, object] = {}
    i = 0
    while i < len(tokens):
        for length in range(min(_MAX_LEN, len(tokens) - i), 0, -1):
            hit = _TABLE.get(tuple(tokens[i : i + length]))
            if hit is not None:
                field, value = hit
                if field in found and found[field] != value:
                    raise InputError(f"caption says two different {field} values: {found[field]!r}, {value!r}")
                found[field] = value
                i += length
                break
        else:
            if tokens[i] not in FILLER:
                raise InputError(f"caption word {tokens[i]!r} is not in the world's vocabulary")
            i += 1
    for needed in ("shape", "color"):
        if needed not in found:
            raise InputError(f"caption names no {needed}: {text!r}")
    return {**_DEFAULTS, **found}


def context_from_caption(text: str) -> Context:
    """The Context a caption describes (variant 0)."""
    fields = parse_caption(text)
    return Context(**{k: v for k, v in fields.items() if k not in ("shape", "color", "pattern")})


def vocabulary() -> list[str]:
    """Every word a world caption can contain, sorted."""
    words = set(FILLER)
    for key in _TABLE:
        words.update(key)
    return sorted(words)
