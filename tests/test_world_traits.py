"""Subjects, contexts, skills and splits of the procedural world (no images)."""

from collections import Counter

import numpy as np
import pytest

from suti.errors import InputError
from suti.world import (
    ACCESSORIES,
    COLORS,
    HELD_OUT_COMBOS,
    PATTERNS,
    SCENES,
    SHAPES,
    SKILLS,
    STYLES,
    Context,
    allowed_recolors,
    coarse_traits,
    for_skill,
    make_subject,
    parse_caption,
    plan_world,
    skill_contexts,
    split_of,
)


def test_subject_is_a_pure_function_of_id_and_seed():
    assert make_subject(5, 0) == make_subject(5, 0)
    assert make_subject(5, 0) != make_subject(6, 0)
    assert make_subject(5, 0) != make_subject(5, 1)
    s = make_subject(11, 3)
    assert (s.shape, s.color, s.pattern) == coarse_traits(11, 3)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_subject_id_must_be_a_non_negative_int(bad):
    with pytest.raises(InputError, match="subject id"):
        make_subject(bad)


def test_vocabularies_cover_the_issue():
    assert len(SHAPES) >= 8 and len(COLORS) >= 8 and len(PATTERNS) >= 5
    assert {"solid", "striped", "dotted", "checkered"} <= set(PATTERNS)
    assert len([s for s in SCENES if s != "plain"]) >= 8
    assert len([s for s in STYLES if s != "photo"]) >= 4
    assert len(ACCESSORIES) >= 3


def test_every_trait_value_occurs():
    traits = [coarse_traits(i, 0) for i in range(600)]
    for k, vocab in enumerate((SHAPES, tuple(COLORS), PATTERNS)):
        counts = Counter(t[k] for t in traits)
        assert set(counts) == set(vocab)
        assert min(counts.values()) > 0.3 * 600 / len(vocab)  # roughly uniform


def test_details_differ_between_same_caption_subjects():
    by_traits: dict = {}
    for i in range(300):
        by_traits.setdefault(coarse_traits(i, 0), []).append(i)
    a, b = next(ids for ids in by_traits.values() if len(ids) >= 2)[:2]
    sa, sb = make_subject(a), make_subject(b)
    assert sa.coarse == sb.coarse
    assert sa.wobble != sb.wobble and sa.hsv_jitter != sb.hsv_jitter and sa.mark_angle != sb.mark_angle
    assert sa.body_rgb() != sb.body_rgb()


@pytest.mark.parametrize(
    "kwargs, word",
    [({"style": "oil"}, "style"), ({"scene": "moon"}, "scene"), ({"recolor": "teal"}, "recolor"),
     ({"accessory": "cape"}, "accessory"), ({"rotation": 45}, "rotation"), ({"scale": "huge"}, "scale"),
     ({"position": "top"}, "position"), ({"variant": 9}, "variant"), ({"flip": "yes"}, "flip")],
)  # fmt: skip
def test_context_rejects_unknown_values(kwargs, word):
    with pytest.raises(InputError, match=word):
        Context(**kwargs)


def test_identity_context_and_single_skill_helpers():
    assert Context().skills == ()
    rng = np.random.default_rng(0)
    subject = make_subject(4)
    for skill in SKILLS:
        options = skill_contexts(skill, subject)
        assert len(options) >= 3
        assert all(c.skills == (skill,) for c in options)
        assert len(set(options)) == len(options)
        assert for_skill(skill, rng, subject).skills == (skill,)
    assert subject.color not in {c.recolor for c in skill_contexts("attribute", subject)}
    with pytest.raises(InputError, match="skill"):
        skill_contexts("juggling")


def test_context_dict_round_trip():
    c = Context(scene="desert", style="pixel", recolor="blue", accessory="hat", rotation=90, flip=True,
                scale="small", position="left", variant=2)  # fmt: skip
    assert Context.from_dict(c.to_dict()) == c
    with pytest.raises(InputError, match="unknown context field"):
        Context.from_dict({"scenery": "desert"})


def test_train_recolours_avoid_held_out_combos():
    for i in range(200):
        s = make_subject(i)
        train = allowed_recolors(s, "train")
        assert s.color not in train
        assert not any((s.shape, c) in HELD_OUT_COMBOS for c in train)
    star = next(make_subject(i) for i in range(500) if make_subject(i).shape == "star" and make_subject(i).color != "blue")
    assert "blue" not in allowed_recolors(star, "train") and "blue" in allowed_recolors(star, "test_subject")


def test_held_out_subjects_and_combos_never_reach_train():
    """Over a large build: no test subject id and no held-out (shape, colour) appears in train rows."""
    rows = list(plan_world(2000, 4, seed=3, noise=0.5))
    splits = Counter(r.split for r in rows)
    assert set(splits) == {"train", "test_subject", "test_combo"}
    assert splits["test_subject"] > 0.04 * len(rows) and splits["test_combo"] > 0.04 * len(rows)

    ids_by_split: dict = {"train": set(), "test_subject": set(), "test_combo": set()}
    for r in rows:
        assert r.split == split_of(r.cluster, 3)
        for sid in (r.subject_id, r.caption_subject_id):
            assert split_of(sid, 3) == r.split  # every subject on a page comes from the page's split
            ids_by_split[r.split].add(sid)
        shape, color, _ = coarse_traits(r.subject_id, 3)
        shown = (shape, r.context.recolor or color)
        said = parse_caption(r.caption)
        said_combo = (said["shape"], said["recolor"] or said["color"])
        if r.split == "train":
            assert shown not in HELD_OUT_COMBOS
            assert said_combo not in HELD_OUT_COMBOS
            assert (said["shape"], said["color"]) not in HELD_OUT_COMBOS
        if r.split == "test_combo" and r.subject_id == r.cluster:
            assert (shape, color) in HELD_OUT_COMBOS
    assert ids_by_split["train"].isdisjoint(ids_by_split["test_subject"] | ids_by_split["test_combo"])
    # the test pages really do show held-out combos, so the check above had something to catch
    assert any((coarse_traits(r.subject_id, 3)[:2]) in HELD_OUT_COMBOS for r in rows if r.split == "test_combo")
