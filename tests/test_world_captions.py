"""Captions: format, variety, vocabulary, and recovering the context from any world caption."""

import re

import numpy as np
import pytest

from suti.errors import InputError
from suti.world import (
    SKILLS,
    Context,
    caption,
    context_from_caption,
    make_subject,
    parse_caption,
    sample_context,
    skill_contexts,
    vocabulary,
)
from suti.world.captions import TEMPLATES


def _random_cases(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        subject = make_subject(int(rng.integers(10_000)), seed=int(rng.integers(3)))
        yield subject, sample_context(rng, subject), rng, i % len(TEMPLATES)


def test_captions_are_lowercase_words_from_the_vocabulary():
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    assert all(re.fullmatch(r"[a-z]+", w) for w in vocab)
    words = set()
    for subject, ctx, rng, template in _random_cases(400):
        text = caption(subject, ctx, rng, template=template)
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", text), text
        words.update(text.split())
    assert words <= set(vocab)


def test_context_and_traits_are_recovered_from_every_caption():
    for subject, ctx, rng, template in _random_cases(1500, seed=1):
        text = caption(subject, ctx, rng, template=template)
        parsed = parse_caption(text)
        expected = {**ctx.to_dict(), **subject.coarse}
        del expected["variant"]  # the scene layout is the one thing captions never say
        assert parsed == expected, text


def test_single_skill_contexts_are_recovered():
    subject = make_subject(2)
    for skill in SKILLS:
        for ctx in skill_contexts(skill, subject):
            for template in range(len(TEMPLATES)):
                assert context_from_caption(caption(subject, ctx, template=template)) == ctx


def test_phrasing_varies():
    subject = make_subject(3)
    ctx = Context(scene="jungle", style="watercolor", accessory="hat", rotation=90, flip=True)
    texts = {caption(subject, ctx, np.random.default_rng(i)) for i in range(60)}
    assert len(texts) >= 20
    assert any(t.startswith("a watercolor") for t in texts)  # style first ...
    assert any(t.endswith(("in watercolor style", "painted in watercolor")) for t in texts)  # ... or last
    assert caption(subject, ctx) == caption(subject, ctx)  # rng=None: one canonical phrasing


def _subject_where(**traits):
    return next(make_subject(i) for i in range(500) if all(getattr(make_subject(i), k) == v for k, v in traits.items()))


def test_canonical_captions_read_naturally():
    s = _subject_where(pattern="striped")
    assert caption(s, Context(scene="jungle")) == f"a photo of a {s.color} striped {s.shape} in the jungle"
    s = _subject_where(pattern="solid", color="orange")
    text = caption(s, Context(style="sketch", accessory="bowtie", recolor="blue"))
    assert text == f"a pencil sketch of an orange {s.shape} painted blue wearing a bow tie"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("a photo of a red", "no shape"),
        ("a photo of a striped star", "no color"),
        ("a photo of a red star, please", "vocabulary"),
        ("a red star painted blue painted green", "two different recolor"),
        ("a red star in the jungle on the beach", "two different scene"),
    ],
)
def test_parse_rejects_what_no_world_caption_says(text, message):
    with pytest.raises(InputError, match=message):
        parse_caption(text)
