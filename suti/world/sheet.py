"""Contact sheet: one subject across the identity context and every single-skill context."""

from __future__ import annotations

from dataclasses import fields, replace

from PIL import Image, ImageDraw, ImageFont

from suti.errors import InputError
from suti.world.captions import caption
from suti.world.context import SKILLS, Context, skill_contexts
from suti.world.render import check_size, render
from suti.world.traits import Subject

LABEL_W = 128
LINE_H = 14
PAD = 4


def cell_label(context: Context) -> str:
    """A short name for what a single-skill context changes ('identity' for the default)."""
    d = Context()
    if context.scene != d.scene:
        return context.scene.replace("_", " ")
    if context.style != d.style:
        return context.style
    if context.recolor:
        return f"to {context.recolor}"
    if context.accessory:
        return context.accessory.replace("bowtie", "bow tie")
    parts = []
    if context.rotation:
        parts.append(f"rot {context.rotation:+d}")
    if context.flip:
        parts.append("flip")
    if context.scale != d.scale:
        parts.append(context.scale)
    if context.position != d.position:
        parts.append(context.position)
    return " ".join(parts) or "identity"


def _on(base: Context, change: Context) -> Context:
    """`base` with the fields that `change` sets away from the defaults."""
    d = Context()
    moved = {f.name: getattr(change, f.name) for f in fields(Context) if getattr(change, f.name) != getattr(d, f.name)}
    return replace(base, **moved)


def contact_sheet(subject: Subject, size: int = 64, base: Context | None = None, zoom: int = 1) -> Image.Image:
    """A labelled grid: identity, then one row per skill with every option of that skill."""
    size = check_size(size)
    if isinstance(zoom, bool) or not isinstance(zoom, int) or not 1 <= zoom <= 8:
        raise InputError(f"zoom must be an integer from 1 to 8, got {zoom!r}")
    base = base if base is not None else Context()
    rows = [("identity", [base])] + [(s, [_on(base, c) for c in skill_contexts(s, subject)]) for s in SKILLS]
    font = ImageFont.load_default()
    shown = size * zoom
    cell_w = max(shown, 76) + PAD
    cell_h = shown + LINE_H + PAD
    ncols = max(len(cs) for _, cs in rows)
    width = LABEL_W + ncols * cell_w + PAD
    height = 2 * LINE_H + len(rows) * cell_h + PAD
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    title = f"subject {subject.subject_id} (world seed {subject.seed}): {caption(subject)}"
    draw.text((PAD, PAD), title, fill=(0, 0, 0), font=font)
    y = 2 * LINE_H
    for name, contexts in rows:
        draw.text((PAD, y + shown // 2 - LINE_H // 2), name, fill=(0, 0, 0), font=font)
        for j, ctx in enumerate(contexts):
            x = LABEL_W + j * cell_w
            img = render(subject, ctx, size)
            if zoom > 1:
                img = img.resize((shown, shown), Image.NEAREST)
            sheet.paste(img, (x + (cell_w - PAD - shown) // 2, y))
            label = _fit(draw, cell_label(ctx) if name != "identity" else "identity", font, cell_w - PAD)
            draw.text((x, y + shown + 1), label, fill=(60, 60, 60), font=font)
        y += cell_h
    return sheet


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text
