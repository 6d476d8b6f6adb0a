"""Grader validation: ceilings and floors on held-out subjects, before any system is judged.

Checks (the issue's "must show"), each measured at 32 px and at 64 px render size:
- ceiling: ground-truth renders of every benchmark item score >= 0.95 on subject and on text fidelity;
- text floor: copy-a-demo scores <= 0.4 on text fidelity;
- subject floor: a different subject with the same coarse caption (shape, colour, pattern), rendered
  in the prompted context, scores <= 0.4 on subject fidelity;
- trait floor (added here): the subject itself with another shape or another pattern (every other
  detail kept), in the prompted context, scores <= 0.4 on subject fidelity; this is why the trait
  probes are a diagnostic and not a factor of the subject score (graders.py);
- realism floor: uniform random noise images score <= 0.1 realism;
- probes: every field >= 98 % accurate on held-out renders in benchmark-like contexts (one skill
  each, as the prompts they grade; argmax in the accepted set, see probes.py). Accuracy on random
  mixes of all skills is reported beside it, not gated.
Other corruptions (blur, flat colour, shuffled pixels) are reported for information, not gated.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image, ImageFilter

from suti.eval.benchmark import (
    Benchmark,
    BenchmarkConfig,
    build_benchmark,
    item_context,
)
from suti.eval.pools import PoolConfig, build_pool
from suti.eval.probes import FIELDS, accepted_sets, accuracy
from suti.world.render import render
from suti.world.traits import PATTERNS, SHAPES, make_subject, split_of

THRESHOLDS = {"gt_subject": (">=", 0.95), "gt_text": (">=", 0.95), "copy_text": ("<=", 0.4),
              "lookalike_subject": ("<=", 0.4), "trait_swap_subject": ("<=", 0.4), "noise_realism": ("<=", 0.1), "probe_accuracy": (">=", 0.98)}  # fmt: skip


def lookalike(subject_id: int, world_seed: int = 0, start: int = 100_000, split: str | None = None) -> int:
    """The first other subject id >= start with the same shape, colour and pattern (and split, if given)."""
    target = make_subject(subject_id, world_seed).coarse
    sid = start
    while sid == subject_id or make_subject(sid, world_seed).coarse != target or \
            (split is not None and split_of(sid, world_seed) != split):  # fmt: skip
        sid += 1
    return sid


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return float(np.mean(values)) if values else None


def _by_skill(rows: list[dict], items, key: str) -> dict[str, float]:
    out: dict[str, list] = {}
    for r, it in zip(rows, items):
        out.setdefault(it.skill, []).append(r[key])
    return {k: round(float(np.mean(v)), 4) for k, v in out.items()}


def _swap_trait(subject, i: int):
    """The subject with its shape (even i) or its pattern (odd i) changed, every detail kept."""
    if i % 2 == 0:
        return replace(subject, shape=SHAPES[(SHAPES.index(subject.shape) + 1 + i // 2 % 7) % len(SHAPES)])
    return replace(subject, pattern=PATTERNS[(PATTERNS.index(subject.pattern) + 1 + i // 2 % 4) % len(PATTERNS)])


def benchmark_checks(graders, bench: Benchmark, size: int) -> dict:
    """Ceiling, text floor and subject floor on the benchmark's items, rendered at `size` px."""
    items = bench.items
    subjects = [bench.subject(it.subject) for it in items]
    prompts = [it.prompt for it in items]
    contexts = [it.context for it in items]
    demos = {s.key: [render(bench.subject(s.key), c, size) for c in s.demo_contexts] for s in bench.subjects}
    gt = [render(subj, item_context(it), size) for subj, it in zip(subjects, items)]
    copies = [demos[it.subject][it.seed % len(demos[it.subject])] for it in items]
    twins = {s.key: make_subject(lookalike(s.subject_id, bench.config.world_seed), bench.config.world_seed)
             for s in bench.subjects}  # fmt: skip
    other = [render(twins[it.subject], item_context(it), size) for it in items]
    swapped = [render(_swap_trait(subj, i), item_context(it), size) for i, (subj, it) in enumerate(zip(subjects, items))]
    demo_lists = [demos[it.subject] for it in items]
    score = lambda imgs: graders.score(imgs, subjects, prompts, demos=demo_lists, contexts=contexts)
    g, c, o, w = score(gt), score(copies), score(other), score(swapped)
    return {
        "gt_subject": _mean(g, "subject"), "gt_text": _mean(g, "text"), "gt_realism": _mean(g, "realism"),
        "gt_overall": _mean(g, "overall"), "copy_text": _mean(c, "text"), "copy_subject": _mean(c, "subject"),
        "lookalike_subject": _mean(o, "subject"), "lookalike_text": _mean(o, "text"),
        "trait_swap_subject": _mean(w, "subject"), "gt_traits": _mean(g, "traits"),
        "gt_subject_by_skill": _by_skill(g, items, "subject"), "gt_text_by_skill": _by_skill(g, items, "text"),
        "paper_style": {"gt": {k: _mean(g, k) for k in ("dino", "clip_i", "clip_t")},
                        "copy": {k: _mean(c, k) for k in ("dino", "clip_i", "clip_t")},
                        "lookalike": {k: _mean(o, k) for k in ("dino", "clip_i", "clip_t")}},
    }  # fmt: skip


def corruption_checks(graders, size: int, n: int = 200, seed: int = 0) -> dict:
    """Realism of noise (gated) and of other corruptions of renders (reported)."""
    rng = np.random.default_rng([seed, size])
    noise = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    pool = build_pool(PoolConfig(split="held_out", subjects=max(1, n // 4), per_subject=4, sizes=(size,),
                                 draw_seed=7, first_id=200_000), progress=False)  # fmt: skip
    clean = [Image.fromarray(a) for a in pool.flat()[0]]
    big = [im.resize((size, size), Image.Resampling.BILINEAR) for im in clean]
    blurred = [im.filter(ImageFilter.GaussianBlur(size / 16)) for im in big]
    flat = [Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3))) for _ in range(n)]
    shuffled = [Image.fromarray(rng.permutation(np.asarray(im).reshape(-1, 3)).reshape(size, size, 3)) for im in big]
    real = lambda imgs: float(graders.realism.score(graders.perceive(imgs).realism_features).mean())
    return {"noise_realism": real(noise), "clean_realism": real(clean), "blur_realism": real(blurred),
            "flat_realism": real(flat), "shuffled_realism": real(shuffled)}  # fmt: skip


def probe_checks(graders, sizes=(32, 64), subjects: int = 300, per_subject: int = 4, skip_ids=(),
                 single_skill: float = 1.0) -> dict:  # fmt: skip
    """Per-field probe accuracy on held-out renders, per render size. single_skill=1: benchmark-like
    contexts (one skill each, or none: what the probes grade); 0: random mixes of every skill."""
    out = {}
    for size in sizes:
        pool = build_pool(PoolConfig(split="held_out", subjects=subjects, per_subject=per_subject, sizes=(size,),
                                     draw_seed=3, skip_ids=tuple(skip_ids), single_skill=single_skill),
                          progress=False)  # fmt: skip
        images, srow, scol = pool.flat()
        subs = pool.subjects
        probs = graders.probe_fields(images, [subs[s] for s in srow])
        acc_sets = [accepted_sets(subs[s], pool.contexts[s][c]) for s, c in zip(srow, scol)]
        out[size] = {f: round(v, 4) for f, v in accuracy({f: probs[f] for f in FIELDS}, acc_sets).items()}
    return out


def validate(graders, config: BenchmarkConfig = BenchmarkConfig(), sizes=(32, 64), probe_subjects: int = 250,
             noise_images: int = 200) -> dict:  # fmt: skip
    """Every check at every size; returns measured values, thresholds and pass/fail."""
    bench = build_benchmark(config)
    skip = tuple(s.subject_id for s in bench.subjects)
    measured: dict = {"probes": probe_checks(graders, sizes, probe_subjects, skip_ids=skip),
                      "probes_mixed_contexts": probe_checks(graders, sizes, probe_subjects, skip_ids=skip, single_skill=0.0)}
    for size in sizes:
        measured[size] = {**benchmark_checks(graders, build_benchmark(replace(config, demo_size=size)), size),
                          **corruption_checks(graders, size, noise_images)}  # fmt: skip
        measured[size]["probe_accuracy"] = min(measured["probes"][size].values())
    checks = []
    for size in sizes:
        for key, (op, limit) in THRESHOLDS.items():
            value = measured[size][key]
            ok = value >= limit if op == ">=" else value <= limit
            checks.append({"check": key, "size": size, "value": round(value, 4), "threshold": f"{op} {limit}", "pass": ok})
    return {"checks": checks, "measured": measured, "all_pass": all(c["pass"] for c in checks)}
