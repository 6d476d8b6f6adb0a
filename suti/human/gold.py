"""Gold items: attention checks with known answers, mixed into every rater's queue.

Known-good kinds:
  truth  the world's ground-truth render of the prompted context (a perfect output: 1 / 1 / 1);
         possible when the item's subject id and prompt describe a world subject (checked: the
         prompt's shape, colour and pattern must match the subject made with the world seed)
  photo  a real photo of the subject, i.e. one of its demos (subject 1, photorealism 1)
Known-bad kinds:
  noise  uniform RGB noise (0 / 0 / 0)
  other  a real photo of a different subject (subject 0)
A rating passes a gold check when every checked axis is within `tolerance` of the expected value
(with the default 0.5 a known-good image must not get a 0, a known-bad one must not get a 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from suti.errors import InputError
from suti.human.evaldir import EvalItem

GOOD_KINDS = ("truth", "photo")
BAD_KINDS = ("noise", "other")
EXPECTED: dict[str, dict[str, float]] = {
    "truth": {"subject": 1.0, "text": 1.0, "realism": 1.0},
    "photo": {"subject": 1.0, "realism": 1.0},
    "noise": {"subject": 0.0, "text": 0.0, "realism": 0.0},
    "other": {"subject": 0.0},
}


@dataclass
class GoldCase:
    """One gold page: the item it borrows (demos + prompt) and its known-good and known-bad images."""

    source: EvalItem
    good_kind: str
    good: Image.Image
    bad_kind: str
    bad: Image.Image


def truth_render(item: EvalItem, world_seed: int, size: tuple[int, int]) -> Image.Image | None:
    """The world's ground-truth render for the item's prompt, or None if the item is not a world item."""
    from suti.world import Context, context_from_caption, make_subject, parse_caption, render

    match = re.fullmatch(r"[A-Za-z_-]*0*(\d+)", item.subject)
    if match is None:
        return None
    try:
        said = parse_caption(item.prompt)
        if item.context is not None:  # the exact context, when the EVAL_DIR records it
            context = Context.from_dict(item.context)
        else:
            context = context_from_caption(item.prompt)
        subject = make_subject(int(match.group(1)), world_seed)
    except (InputError, TypeError):
        return None
    if any(said[k] != v for k, v in subject.coarse.items()):
        return None  # another world seed, or not this subject
    return render(subject, context, size=max(size)).resize(size, Image.BICUBIC)


def noise_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _open_rgb(path, size: tuple[int, int]) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB").resize(size, Image.BICUBIC)


def count_gold(fraction: float, real_tasks_per_rater: float) -> int:
    """Gold pages per rater so that they make `fraction` of each queue (at least 2: one good, one bad)."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"gold fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return 0
    return max(2, round(fraction / (1.0 - fraction) * real_tasks_per_rater))


def make_gold(items: tuple[EvalItem, ...], n: int, good: str, world_seed: int, rng: np.random.Generator,
              output_size) -> list[GoldCase]:  # fmt: skip
    """`n` gold cases on randomly chosen items. `good` is "truth" (falls back to "photo" per item
    when the item is not a world item) or "photo"; the bad kind alternates noise / other subject."""
    if good not in GOOD_KINDS:
        raise InputError(f"unknown known-good gold kind {good!r}; choose from {', '.join(GOOD_KINDS)}")
    subjects = sorted({it.subject for it in items})
    cases = []
    for i, index in enumerate(rng.permutation(max(n, len(items)))[:n] % len(items)):
        item = items[int(index)]
        size = output_size(item)
        image = truth_render(item, world_seed, size) if good == "truth" else None
        good_kind = "truth" if image is not None else "photo"
        if image is None:
            image = _open_rgb(item.demos[int(rng.integers(len(item.demos)))], size)
        bad_kind = "other" if i % 2 == 1 and len(subjects) > 1 else "noise"
        if bad_kind == "other":
            others = [it for it in items if it.subject != item.subject]
            donor = others[int(rng.integers(len(others)))]
            bad = _open_rgb(donor.demos[int(rng.integers(len(donor.demos)))], size)
        else:
            bad = noise_image(rng, size)
        cases.append(GoldCase(item, good_kind, image, bad_kind, bad))
    return cases


def passes(expected: dict, rating: dict, tolerance: float = 0.5) -> bool:
    """Whether one rating passes its gold check (absolute: per-axis values; pairwise: the preferred side)."""
    if "preferred" in expected:
        return rating.get("preferred") == expected["preferred"]
    return all(rating.get(axis) is not None and abs(rating[axis] - value) <= tolerance + 1e-9
               for axis, value in expected.items())  # fmt: skip
