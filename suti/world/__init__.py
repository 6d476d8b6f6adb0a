"""The procedural subject world: subjects, contexts, renderer, captions, cluster pages, datasets.

    subject = make_subject(7, seed=0)                 # coarse traits + unnameable details
    ctx = Context(scene="jungle", style="watercolor")  # what a prompt controls
    image = render(subject, ctx, size=64)              # PIL RGB, anti-aliased
    text = caption(subject, ctx, rng)                  # lowercase words, no punctuation
    parse_caption(text)                                # -> traits and context fields back
"""

from suti.world.captions import caption, context_from_caption, parse_caption, vocabulary
from suti.world.context import (
    ACCESSORIES,
    POSITIONS,
    ROTATIONS,
    SCALES,
    SCENES,
    SKILLS,
    STYLES,
    Context,
    for_skill,
    sample_context,
    skill_contexts,
)
from suti.world.dataset import BuildConfig, build_dataset, features
from suti.world.pages import NOISE_KINDS, Row, canonical_url, plan_cluster, plan_world, render_row
from suti.world.render import MAX_SIZE, MIN_SIZE, Layers, render, render_layers
from suti.world.sheet import contact_sheet
from suti.world.traits import (
    COLORS,
    HELD_OUT_COMBOS,
    PATTERNS,
    SHAPES,
    SPLITS,
    Subject,
    allowed_recolors,
    coarse_traits,
    is_held_out_combo,
    make_subject,
    split_of,
)

__all__ = [
    "ACCESSORIES", "COLORS", "HELD_OUT_COMBOS", "MAX_SIZE", "MIN_SIZE", "NOISE_KINDS", "PATTERNS",
    "POSITIONS", "ROTATIONS", "SCALES", "SCENES", "SHAPES", "SKILLS", "SPLITS", "STYLES",
    "BuildConfig", "Context", "Layers", "Row", "Subject",
    "allowed_recolors", "build_dataset", "canonical_url", "caption", "coarse_traits", "contact_sheet",
    "context_from_caption", "features", "for_skill", "is_held_out_combo", "make_subject", "parse_caption",
    "plan_cluster", "plan_world", "render", "render_layers", "render_row", "sample_context",
    "skill_contexts", "split_of", "vocabulary",
]  # fmt: skip
