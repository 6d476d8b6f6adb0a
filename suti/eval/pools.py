"""Render pools: many subjects x a few random contexts, stored at the grader size, for training and
validating the graders.

Contexts are benchmark-like (one skill) with probability `single_skill`, else a random mix of skills
(`sample_context`), so the graders are sharpest where they are used and still see mixed outputs.
Graders train on TRAIN-split subjects only and are validated on held-out ones (`test_subject` and
`test_combo`). Each image is rendered at a size drawn from `sizes` and area-reduced to the grader size,
so the graders see both native 32 px renders and reduced 64 px ones. Every subject also gets a
canonical render (identity context) that the pose probe reads poses against.

    pool = build_pool(PoolConfig(split="train", subjects=2000, per_subject=6))
    pool.images.shape   # (2000, 6, 32, 32, 3) uint8
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from suti.errors import InputError
from suti.eval.images import GRADER_SIZE
from suti.world.context import SKILLS, Context, sample_context, skill_contexts
from suti.world.render import render
from suti.world.traits import allowed_recolors, make_subject, split_of

POOL_SPLITS = ("train", "held_out")
CANONICAL = Context()


@dataclass(frozen=True)
class PoolConfig:
    """Which subjects, how many renders each, at which sizes, from which random stream."""

    split: str = "train"  # "train" or "held_out" (test_subject + test_combo)
    subjects: int = 2000
    per_subject: int = 6
    sizes: tuple[int, ...] = (32, 64)  # render sizes, drawn uniformly per image
    world_seed: int = 0
    draw_seed: int = 0  # contexts and sizes
    first_id: int = 0  # subject ids are scanned upwards from here
    skip_ids: tuple[int, ...] = ()  # never use these subjects (e.g. the benchmark's)
    single_skill: float = 0.6  # share of benchmark-like contexts (one skill, or none); the rest mix skills

    def check(self) -> PoolConfig:
        if self.split not in POOL_SPLITS:
            raise InputError(f"pool split must be one of {POOL_SPLITS}, got {self.split!r}")
        if self.subjects < 1 or self.per_subject < 1:
            raise InputError("a pool needs at least one subject and one render per subject")
        if not self.sizes or any(s < GRADER_SIZE // 2 for s in self.sizes):
            raise InputError(f"pool sizes must be at least {GRADER_SIZE // 2} px, got {self.sizes}")
        return self


@dataclass
class RenderPool:
    """Renders of S subjects x K contexts at the grader size, with their ground truth."""

    images: np.ndarray  # (S, K, G, G, 3) uint8
    refs: np.ndarray  # (S, G, G, 3) uint8 canonical renders (identity context, 32 px)
    subject_ids: np.ndarray  # (S,)
    contexts: list[list[Context]]  # S x K
    world_seed: int = 0
    groups: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)  # coarse traits -> rows

    @property
    def subjects(self):
        return [make_subject(int(i), self.world_seed) for i in self.subject_ids]

    def head(self, n: int) -> RenderPool:
        """The pool of the first n subjects (what a config with subjects=n renders: draws are sequential)."""
        n = min(n, len(self.subject_ids))
        groups = {k: [r for r in rows if r < n] for k, rows in self.groups.items()}
        return RenderPool(self.images[:n], self.refs[:n], self.subject_ids[:n], self.contexts[:n], self.world_seed,
                          {k: rows for k, rows in groups.items() if rows})  # fmt: skip

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images (S*K, G, G, 3), subject row (S*K,), context column (S*K,))."""
        s, k = self.images.shape[:2]
        return self.images.reshape(s * k, *self.images.shape[2:]), np.repeat(np.arange(s), k), np.tile(np.arange(k), s)


def subject_ids_for(cfg: PoolConfig) -> list[int]:
    """The first `cfg.subjects` ids at or above `first_id` that belong to the pool's split."""
    wanted = ("train",) if cfg.split == "train" else ("test_subject", "test_combo")
    skip = set(cfg.skip_ids)
    ids, sid = [], cfg.first_id
    while len(ids) < cfg.subjects:
        if sid not in skip and split_of(sid, cfg.world_seed) in wanted:
            ids.append(sid)
        sid += 1
    return ids


def draw_context(rng: np.random.Generator, subject, recolors: tuple[str, ...], single_skill: float) -> Context:
    """A benchmark-like context (one skill, 1 in 10 the identity context) or a random mix of skills."""
    if rng.random() >= single_skill:
        return sample_context(rng, subject, recolors)
    variant = int(rng.integers(0, 4))
    if rng.random() < 0.1:
        return Context(variant=variant)
    skill = SKILLS[int(rng.integers(0, len(SKILLS)))]
    options = [c for c in skill_contexts(skill, subject) if not c.recolor or c.recolor in recolors]
    return replace(options[int(rng.integers(0, len(options)))], variant=variant)


def render_small(subject, ctx: Context, size: int) -> np.ndarray:
    """A render at `size`, area-reduced to the grader size, as (G, G, 3) uint8."""
    img = render(subject, ctx, size)
    if size != GRADER_SIZE:
        img = img.resize((GRADER_SIZE, GRADER_SIZE), Image.Resampling.BOX)
    return np.asarray(img)


def build_pool(cfg: PoolConfig, progress: bool = True) -> RenderPool:
    """Render the pool (deterministic in the config)."""
    from tqdm import tqdm

    cfg = cfg.check()
    ids = subject_ids_for(cfg)
    rng = np.random.default_rng([cfg.draw_seed, cfg.world_seed, 0xE7A1])
    g = GRADER_SIZE
    images = np.empty((len(ids), cfg.per_subject, g, g, 3), np.uint8)
    refs = np.empty((len(ids), g, g, 3), np.uint8)
    contexts: list[list[Context]] = []
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for row, sid in enumerate(tqdm(ids, desc=f"render {cfg.split} pool", disable=not progress)):
        subject = make_subject(sid, cfg.world_seed)
        recolors = allowed_recolors(subject, split_of(sid, cfg.world_seed))
        ctxs = [draw_context(rng, subject, recolors, cfg.single_skill) for _ in range(cfg.per_subject)]
        for k, ctx in enumerate(ctxs):
            images[row, k] = render_small(subject, ctx, int(rng.choice(cfg.sizes)))
        refs[row] = render_small(subject, CANONICAL, g)
        contexts.append(ctxs)
        groups[(subject.shape, subject.color, subject.pattern)].append(row)
    return RenderPool(images, refs, np.asarray(ids), contexts, cfg.world_seed, dict(groups))
