"""suti.eval.benchmark: the world DreamBench definition (held-out, sized, deterministic, parseable)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from suti.errors import InputError
from suti.eval.benchmark import MAX_SUBJECTS, QUICK, BenchmarkConfig, benchmark_subject_ids, build_benchmark, item_context
from suti.world import SKILLS, Context, context_from_caption, parse_caption, split_of


@pytest.fixture(scope="module")
def full():
    return build_benchmark(BenchmarkConfig())


def test_full_benchmark_has_30_held_out_subjects_25_prompts_4_seeds(full):
    assert len(full.subjects) == 30 and len(full.items) == 30 * 25 * 4
    splits = Counter(split_of(s.subject_id) for s in full.subjects)
    assert splits == {"test_subject": 15, "test_combo": 15}
    per_subject_skill = Counter((it.subject, it.skill) for it in full.items if it.seed == 0)
    assert set(per_subject_skill.values()) == {5}
    assert {it.seed for it in full.items} == {0, 1, 2, 3}
    assert len({it.item_id for it in full.items}) == len(full.items)


def test_demos_are_three_to_five_upright_photos_and_prompts_ask_for_something_new(full):
    assert {len(s.demo_contexts) for s in full.subjects} == {3, 4, 5}
    for s in full.subjects:
        assert all(c.style == "photo" and c.skills in ((), ("recontextualization",)) for c in s.demo_contexts)
        demo_scenes = {c.scene for c in s.demo_contexts}
        prompts = {(it.skill, it.context) for it in full.items if it.subject == s.key}
        assert len(prompts) == 25  # no repeated prompt context within a subject
        for skill, ctx in prompts:
            assert skill in ctx.skills
            if skill == "recontextualization":
                assert ctx.scene not in demo_scenes


def test_every_prompt_and_demo_caption_is_a_world_caption_of_its_context(full):
    for it in full.items[::7]:
        subject = full.subject(it.subject)
        assert context_from_caption(it.prompt) == replace(it.context, variant=0)
        assert parse_caption(it.prompt)["shape"] == subject.shape
    for s in full.subjects:
        for ctx, cap in zip(s.demo_contexts, s.demo_captions):
            assert context_from_caption(cap) == replace(ctx, variant=0)


def test_benchmark_is_deterministic_and_the_fingerprint_tracks_the_config():
    a, b = build_benchmark(QUICK), build_benchmark(QUICK)
    assert a.items == b.items and a.subjects == b.subjects
    assert QUICK.fingerprint() != replace(QUICK, steps=26).fingerprint()
    assert len(a.items) == 4 * 5 * 1 and {it.skill for it in a.items} == set(SKILLS)


def test_quick_subset_uses_the_first_subjects_of_the_full_benchmark(full):
    quick = build_benchmark(QUICK)
    assert [s.key for s in quick.subjects] == sorted(s.key for s in quick.subjects)
    assert {s.subject_id for s in quick.subjects} <= {s.subject_id for s in full.subjects}


def test_validation_split_is_held_out_and_shares_no_subject_with_any_test_benchmark():
    val = build_benchmark(replace(QUICK, subjects=6, split="validation"))
    ids = [s.subject_id for s in val.subjects]
    assert len(set(ids)) == 6 and ids == benchmark_subject_ids(6, split="validation")
    assert not set(ids) & set(benchmark_subject_ids(MAX_SUBJECTS))  # the largest test benchmark
    assert sorted(split_of(i) for i in ids) == ["test_combo"] * 3 + ["test_subject"] * 3  # never trained on
    assert {s.subject_id for s in build_benchmark(replace(QUICK, subjects=3, split="validation")).subjects} < set(ids)
    assert QUICK.fingerprint() != replace(QUICK, split="validation").fingerprint()  # an EVAL_DIR is one split


def test_seed_picks_the_scene_layout_of_the_ground_truth(full):
    it = full.items[0]
    assert item_context(replace(it, seed=3)).variant == 3 and item_context(it).variant == it.seed % 4
    assert isinstance(item_context(it), Context)


@pytest.mark.parametrize("bad", [{"subjects": 0}, {"prompts_per_skill": 6}, {"images_per_prompt": 0},
                                 {"demo_size": 8}, {"steps": 0}, {"split": "train"}])
def test_bad_config_raises_input_error(bad):
    with pytest.raises(InputError):
        build_benchmark(replace(BenchmarkConfig(), **bad))
