"""Cached subject tokens (`encode_subject` -> `subject_embeds=`) and Re-Imagen mode (`retriever=`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _tiny import CAPTIONS, demo_images, gen, run, tiny_pipe
from suti.errors import InputError
from suti.models.subject_attn import DemoContext


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe()


def test_cached_subject_tokens_give_the_same_images_as_the_photos(pipe):
    demos, caps = demo_images(3, seed=1), CAPTIONS[:3]
    ctx = pipe.encode_subject(demos, caps)
    assert isinstance(ctx, DemoContext) and ctx.batch_size == 1
    direct = run(pipe, demos=demos, subject_captions=caps, seed=4)
    cached = run(pipe, subject_embeds=ctx, seed=4)
    np.testing.assert_allclose(cached, direct, atol=1e-6)
    # and the subject changes the result (the cache is not ignored)
    other = run(pipe, subject_embeds=pipe.encode_subject(demo_images(3, seed=9), caps), seed=4)
    assert np.abs(other - cached).max() > 1e-4


def test_cached_tokens_skip_the_demo_encoder(pipe, monkeypatch):
    ctx = pipe.encode_subject(demo_images(3), CAPTIONS[:3])
    calls = []
    original = pipe.subject.encode_demos
    monkeypatch.setattr(pipe.subject, "encode_demos", lambda *a, **k: calls.append(1) or original(*a, **k))
    run(pipe, subject_embeds=ctx)
    assert calls == []
    run(pipe, demos=demo_images(3), subject_captions=CAPTIONS[:3])
    assert calls == [1]  # photos: encoded exactly once for all steps


def test_per_prompt_contexts_with_different_demo_counts_batch_like_singles(pipe):
    a = pipe.encode_subject(demo_images(3, seed=2), CAPTIONS[:3])
    b = pipe.encode_subject(demo_images(5, seed=3), CAPTIONS[:5])
    assert a.tokens.shape[1] < b.tokens.shape[1]
    prompts = ["a red circle on the beach", "a red circle in snow"]
    batch = pipe(prompts, subject_embeds=[a, b], num_inference_steps=3, output_type="np",
                 generator=[gen(5), gen(6)]).images
    one = run(pipe, prompts[0], subject_embeds=a, seed=5)
    two = run(pipe, prompts[1], subject_embeds=b, seed=6)
    np.testing.assert_allclose(batch[0], one[0], atol=1e-5)
    np.testing.assert_allclose(batch[1], two[0], atol=1e-5)


def test_one_context_is_shared_by_every_prompt(pipe):
    ctx = pipe.encode_subject(demo_images(3), CAPTIONS[:3])
    prompts = ["a red circle on the beach", "a red circle in snow"]
    shared = pipe(prompts, subject_embeds=ctx, num_inference_steps=3, output_type="np",
                  generator=[gen(1), gen(2)]).images
    listed = pipe(prompts, subject_embeds=[ctx, ctx], num_inference_steps=3, output_type="np",
                  generator=[gen(1), gen(2)]).images
    np.testing.assert_allclose(shared, listed, atol=1e-6)


BAD = {  # name -> (keyword arguments built from a real context `c` and demos `d`, expected message)
    "not a context": (lambda c, d: dict(subject_embeds="tokens"), "expected a DemoContext"),
    "wrong width": (lambda c, d: dict(subject_embeds=DemoContext(torch.zeros(1, 4, 7))), "token width 7"),
    "two sources": (lambda c, d: dict(subject_embeds=c, subject_images=d), "only one demo source"),
    "re-encode": (lambda c, d: dict(subject_embeds=c, reencode_demos=True), "cannot be re-encoded"),
    "count": (lambda c, d: dict(subject_embeds=[c, c, c]), r"one context \(batch 1\) per prompt"),
    "no search": (lambda c, d: dict(retriever=object()), r"must have a \.search"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_cached_or_retrieval_inputs_name_the_problem(pipe, case):
    build, message = BAD[case]
    kwargs = build(pipe.encode_subject(demo_images(3), CAPTIONS[:3]), demo_images(3))
    with pytest.raises(InputError, match=message):
        pipe("a red circle", num_inference_steps=2, **kwargs)


def test_encode_subject_checks_its_input(pipe):
    with pytest.raises(InputError, match="no demo images"):
        pipe.encode_subject([])
    with pytest.raises(InputError, match="caption count must equal"):
        pipe.encode_subject(demo_images(3), CAPTIONS[:2])


def test_base_pipeline_without_subject_layers_refuses_subject_inputs():
    pipe = tiny_pipe()
    ctx = pipe.encode_subject(demo_images(3))
    pipe.detach_subject()
    with pytest.raises(InputError, match="no subject layers"):
        pipe("a red circle", subject_embeds=ctx, num_inference_steps=2)
    with pytest.raises(InputError, match="no subject layers"):
        pipe.encode_subject(demo_images(3))
