"""Ablation knobs of `suti eval auto`: a fixed demo count per subject and `suti:DIR@...` options."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from _tiny import tiny_pipe
from suti.errors import InputError
from suti.eval.benchmark import QUICK, BenchmarkConfig, build_benchmark
from suti.eval.systems import PipelineSystem, SutiOptions, resolve_system

SMALL = BenchmarkConfig(subjects=2, prompts_per_skill=1, images_per_prompt=1, steps=2, demos=5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("abl") / "model"
    tiny_pipe(gate=0.7).save_pretrained(out)
    return out


def test_fixed_demo_count_gives_every_subject_that_many_and_keeps_old_fingerprints():
    five = build_benchmark(replace(QUICK, demos=5))
    assert [len(s.demo_contexts) for s in five.subjects] == [5] * len(five.subjects)
    assert len({len(s.demo_contexts) for s in build_benchmark(QUICK).subjects}) > 1  # default: 3-5 by subject
    # The defaults (demos=0, split="test") leave the fingerprints of EVAL_DIRs written before those fields
    # existed (at text / subject guidance 5 / 3, the defaults then) unchanged.
    old = {"guidance_scale": 5.0, "subject_guidance_scale": 3.0}
    assert replace(QUICK, **old).fingerprint() == "439783ecadcda3f5"
    assert replace(BenchmarkConfig(), **old).fingerprint() == "c3edb9c06a4b453d"
    assert replace(QUICK, demos=5).fingerprint() != QUICK.fingerprint()
    with pytest.raises(InputError, match="demos must be 1-5"):
        build_benchmark(replace(QUICK, demos=6))


def test_options_parse_and_bad_ones_are_named():
    assert SutiOptions.parse("") == SutiOptions()
    assert SutiOptions.parse("demos=1, captions=off,demo_timestep=current") == SutiOptions(1, False, "current")
    assert SutiOptions.parse("demo_timestep=250").demo_timestep == 250
    for bad in ("demos=0", "demos=x", "captions=maybe", "demo_timestep=-1", "colour=red", "demos"):
        with pytest.raises(InputError, match="suti option"):
            SutiOptions.parse(bad)


def _direct(pipe, demos, captions, prompt, seed, config, **kw):
    out = pipe(prompt, subject_images=demos, subject_captions=captions, num_inference_steps=config.steps,
               guidance_scale=config.guidance_scale, subject_guidance_scale=config.subject_guidance_scale,
               generator=torch.Generator().manual_seed(seed), output_type="np", **kw)
    return (out.images[0] * 255).round()


def test_options_change_exactly_what_they_name(model_dir):
    bench = build_benchmark(SMALL)
    item = bench.items[0]
    demos, captions = list(bench.demo_images(item.subject)), list(bench.by_key[item.subject].demo_captions)
    assert len(demos) == 5
    full = resolve_system(f"suti:{model_dir}", bench).fn
    one = resolve_system(f"one=suti:{model_dir}@demos=1", bench)
    nocap = resolve_system(f"suti:{model_dir}@captions=off", bench).fn
    reenc = resolve_system(f"suti:{model_dir}@demo_timestep=current", bench).fn
    assert one.name == "one" and isinstance(one.fn, PipelineSystem)

    def img(fn):
        return np.asarray(fn(demos, captions, item.prompt, item.seed), dtype=np.float64)

    pipe = full.pipe
    assert np.array_equal(img(one.fn), _direct(pipe, demos[:1], captions[:1], item.prompt, item.seed, SMALL))
    assert np.array_equal(img(nocap), _direct(pipe, demos, None, item.prompt, item.seed, SMALL))
    assert np.array_equal(img(reenc), _direct(pipe, demos, captions, item.prompt, item.seed, SMALL,
                                              demo_timestep="current"))
    base = img(full)
    assert np.array_equal(base, _direct(pipe, demos, captions, item.prompt, item.seed, SMALL))
    assert not np.array_equal(img(one.fn), base)  # one demo is not five: the option really acts
    with pytest.raises(InputError, match="bad suti option"):
        resolve_system(f"suti:{model_dir}@demos=none", bench)


@pytest.fixture(scope="module")
def places_model(tmp_path_factory):
    """A tiny model whose demo tokens come from two levels and carry their places, plus one benchmark item."""
    from _tiny import tiny_config

    cfg = tiny_config()
    cfg = replace(cfg, subject=replace(cfg.subject, levels=("down.0", "mid"), positions=True))
    out = tmp_path_factory.mktemp("places") / "m"
    tiny_pipe(cfg, gate=0.7).save_pretrained(out)
    bench = build_benchmark(SMALL)
    item = bench.items[0]
    demos, captions = list(bench.demo_images(item.subject)), list(bench.by_key[item.subject].demo_captions)
    return out, bench, item, demos, captions


def test_places_off_drops_the_locality_of_a_model_with_places(places_model):
    model, bench, item, demos, captions = places_model
    full = resolve_system(f"suti:{model}", bench).fn
    off = resolve_system(f"suti:{model}@places=off", bench).fn
    pipe = full.pipe
    ctx = replace(pipe.encode_subject(demos, captions), positions=None)
    want = pipe(item.prompt, subject_embeds=ctx, num_inference_steps=SMALL.steps, guidance_scale=SMALL.guidance_scale,
                subject_guidance_scale=SMALL.subject_guidance_scale, output_type="np",
                generator=torch.Generator().manual_seed(item.seed)).images[0]
    got = np.asarray(off(demos, captions, item.prompt, item.seed), dtype=np.float64)
    assert np.array_equal(got, (want * 255).round())
    assert not np.array_equal(got, np.asarray(full(demos, captions, item.prompt, item.seed), dtype=np.float64))
    assert SutiOptions.parse("places=off") == SutiOptions(places=False)
    with pytest.raises(InputError, match="cannot be combined"):
        SutiOptions.parse("places=off,demo_timestep=current")


def test_pool_option_pools_demo_tokens_and_matches_a_pooled_model(places_model, tmp_path):
    from suti.pipeline import SuTIPipeline

    model, bench, item, demos, captions = places_model
    full = resolve_system(f"suti:{model}", bench).fn
    pooled = resolve_system(f"suti:{model}@pool=2", bench).fn
    assert SutiOptions.parse("pool=2") == SutiOptions(pool=2)
    for bad in ("pool=0", "pool=x", "pool=-1"):
        with pytest.raises(InputError, match="bad suti option"):
            SutiOptions.parse(bad)
    # Two levels pooled to 2 x 2 -> 8 image tokens per demo (caption tokens unchanged), each with its place.
    ctx, ctx_full = pooled.pipe.encode_subject(demos, captions), full.pipe.encode_subject(demos, captions)
    assert pooled.pipe.subject.demo_encoder.tokens_per_demo(pooled.pipe.unet, 0) == 8
    per_demo_full = full.pipe.subject.demo_encoder.tokens_per_demo(full.pipe.unet, 0)
    assert per_demo_full > 8
    assert ctx_full.tokens.shape[1] - ctx.tokens.shape[1] == len(demos) * (per_demo_full - 8)
    assert ctx.positions.shape[1] == ctx.tokens.shape[1]
    got = np.asarray(pooled(demos, captions, item.prompt, item.seed), dtype=np.float64)
    assert not np.array_equal(got, np.asarray(full(demos, captions, item.prompt, item.seed), dtype=np.float64))
    # The setting is part of the subject config: saved and loaded, it gives the same image.
    pooled.pipe.save_pretrained(tmp_path / "pooled")
    again = SuTIPipeline.from_pretrained(str(tmp_path / "pooled"))
    again.scheduler = type(pooled.pipe.scheduler).from_config(pooled.pipe.scheduler.config)  # the benchmark's
    assert again.subject.config.pool_size == 2
    assert np.array_equal(got, _direct(again, demos, captions, item.prompt, item.seed, SMALL))
    with pytest.raises(InputError, match="pool size"):
        again.subject.set_pool_size(0)
