"""World DreamBench: held-out subjects x prompts (per skill) x seeds, with fixed demos and sampler.

Full: 30 held-out subjects (15 `test_subject` + 15 `test_combo`) x 25 prompts (5 per skill) x 4 seeds
= 3,000 images per system. Quick (CI): 4 subjects x 5 prompts (1 per skill) x 1 seed = 20 images.
Everything is a pure function of the config:
- demos: 3, 4 or 5 per subject (by subject index; `demos=N` gives every subject N), photo style, upright, centred; the first on the
  plain background, the others on distinct scenes; captions in random phrasing;
- prompts: recontextualization uses scenes no demo shows, stylization every non-photo style,
  attribute random other colours, accessorization every accessory (the fifth on a new scene),
  view random distinct turns / flips / sizes / positions; each prompt is a world caption;
- seeds 0..images_per_prompt-1; every system is run with the same sampler and step count.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

import numpy as np

from suti.errors import InputError
from suti.world.captions import caption
from suti.world.context import ACCESSORIES, SCENES, SKILLS, Context, skill_contexts
from suti.world.render import render
from suti.world.traits import Subject, make_subject, split_of

_STREAM = 0xBE4C
SPLITS = ("test", "validation")
MAX_SUBJECTS = 200
# Fields added after EVAL_DIRs had been written, with their defaults: left out of the fingerprint at the
# default, so those EVAL_DIRs stay valid.
_ADDED_LATER = {"demos": 0, "split": "test"}


@dataclass(frozen=True)
class BenchmarkConfig:
    subjects: int = 30
    prompts_per_skill: int = 5
    images_per_prompt: int = 4
    demo_size: int = 32  # demos (and ground-truth outputs) are rendered at this size
    world_seed: int = 0
    sampler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 2.0
    subject_guidance_scale: float = 2.0
    demos: int = 0  # demos per subject: 0 = 3, 4 or 5 by subject index; 1-5 = that many for every subject
    split: str = "test"  # "test": the benchmark's subjects; "validation": other held-out subjects, for tuning

    def check(self) -> BenchmarkConfig:
        if not 1 <= self.subjects <= MAX_SUBJECTS:
            raise InputError(f"subjects must be 1-{MAX_SUBJECTS}, got {self.subjects}")
        if not 1 <= self.prompts_per_skill <= 5:
            raise InputError(f"prompts_per_skill must be 1-5, got {self.prompts_per_skill}")
        if not 1 <= self.images_per_prompt <= 16:
            raise InputError(f"images_per_prompt must be 1-16, got {self.images_per_prompt}")
        if not 16 <= self.demo_size <= 512:
            raise InputError(f"demo_size must be 16-512 px, got {self.demo_size}")
        if self.steps < 1:
            raise InputError(f"steps must be positive, got {self.steps}")
        for name in ("guidance_scale", "subject_guidance_scale"):
            value = getattr(self, name)
            if not 0 <= value <= 50:  # NaN fails too
                raise InputError(f"{name} must be a number in 0-50, got {value}")
        if not 0 <= self.demos <= 5:
            raise InputError(f"demos must be 1-5 per subject (0 = 3-5 by subject), got {self.demos}")
        if self.split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        return self

    def fingerprint(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if _ADDED_LATER.get(k, object()) != v}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


QUICK = BenchmarkConfig(subjects=4, prompts_per_skill=1, images_per_prompt=1, steps=25)


@dataclass(frozen=True)
class BenchSubject:
    key: str  # "s003"
    subject_id: int
    demo_contexts: tuple[Context, ...]
    demo_captions: tuple[str, ...]


@dataclass(frozen=True)
class Item:
    item_id: str  # "s003-p07-0"
    subject: str
    subject_id: int
    skill: str
    prompt_index: int
    prompt: str
    context: Context
    seed: int


@dataclass
class Benchmark:
    config: BenchmarkConfig
    subjects: list[BenchSubject]
    items: list[Item]

    def subject(self, key: str) -> Subject:
        return make_subject(self.by_key[key].subject_id, self.config.world_seed)

    @property
    def by_key(self) -> dict[str, BenchSubject]:
        return {s.key: s for s in self.subjects}

    def demo_images(self, key: str):
        """The subject's demo renders (PIL, demo_size px)."""
        bs, subject = self.by_key[key], self.subject(key)
        return [render(subject, ctx, self.config.demo_size) for ctx in bs.demo_contexts]


def benchmark_subject_ids(n: int, world_seed: int = 0, split: str = "test") -> list[int]:
    """n held-out subject ids of a benchmark split (sorted).

    "test": the first n held-out ids; "validation": the n after the first `MAX_SUBJECTS`, so that no test
    benchmark of any size shares a subject with a validation one (tune sampling settings on these).
    """
    if split == "validation":
        return _held_out_ids(MAX_SUBJECTS + n, world_seed)[MAX_SUBJECTS:]  # ids are found in increasing order
    return _held_out_ids(n, world_seed)


def _held_out_ids(n: int, world_seed: int) -> list[int]:
    """n held-out ids: alternately the next `test_subject` and the next `test_combo` id."""
    found: dict[str, list[int]] = {"test_subject": [], "test_combo": []}
    sid = 0
    while sum(map(len, found.values())) < n:
        split = split_of(sid, world_seed)
        want = "test_subject" if len(found["test_subject"]) <= len(found["test_combo"]) else "test_combo"
        if split == want:
            found[split].append(sid)
        sid += 1
    return sorted(found["test_subject"] + found["test_combo"])


def _demo_contexts(index: int, rng: np.random.Generator, count: int = 0) -> tuple[Context, ...]:
    n = count or 3 + index % 3
    scenes = [str(s) for s in rng.permutation([s for s in SCENES if s != "plain"])[: n - 1]]
    return tuple(Context(scene=s, variant=int(rng.integers(0, 4))) for s in ["plain"] + scenes)


def _prompt_contexts(skill: str, subject: Subject, demo_scenes: set[str], k: int,
                     rng: np.random.Generator) -> list[Context]:  # fmt: skip
    if skill == "recontextualization":
        options = [c for c in skill_contexts(skill) if c.scene not in demo_scenes]
        return [options[i] for i in rng.permutation(len(options))[:k]]
    if skill == "accessorization":
        new_scene = [s for s in SCENES if s != "plain" and s not in demo_scenes]
        extra = Context(accessory=ACCESSORIES[int(rng.integers(0, 4))], scene=new_scene[int(rng.integers(0, len(new_scene)))])
        return (skill_contexts(skill) + [extra])[:k]
    options = skill_contexts(skill, subject)
    if skill == "stylization":
        return options[:k]
    return [options[i] for i in rng.permutation(len(options))[:k]]


def build_benchmark(config: BenchmarkConfig = BenchmarkConfig()) -> Benchmark:
    """The benchmark of this config (deterministic)."""
    config = config.check()
    subjects, items = [], []
    for index, sid in enumerate(benchmark_subject_ids(config.subjects, config.world_seed, config.split)):
        subject = make_subject(sid, config.world_seed)
        rng = np.random.default_rng([config.world_seed, sid, _STREAM])
        demos = _demo_contexts(index, rng, config.demos)
        key = f"s{sid:03d}"
        subjects.append(BenchSubject(key, sid, demos, tuple(caption(subject, c, rng) for c in demos)))
        p = 0
        for skill in SKILLS:
            for ctx in _prompt_contexts(skill, subject, {c.scene for c in demos}, config.prompts_per_skill, rng):
                text = caption(subject, ctx, rng)
                for seed in range(config.images_per_prompt):
                    items.append(Item(f"{key}-p{p:02d}-{seed}", key, sid, skill, p, text, ctx, seed))
                p += 1
    return Benchmark(config, subjects, items)


def item_context(item: Item) -> Context:
    """The context a ground-truth render of this item uses (the seed picks the scene layout)."""
    return replace(item.context, variant=item.seed % 4)
