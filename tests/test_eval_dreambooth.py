"""The DreamBooth reference system of `suti eval auto`: one fine-tune per demo set, on the demos themselves."""

import numpy as np
import pytest
import torch

from _tiny import tiny_pipe
from suti.errors import InputError
from suti.eval.benchmark import BenchmarkConfig, build_benchmark
from suti.eval.systems import DreamBoothSystem, resolve_system

SMALL = BenchmarkConfig(subjects=2, prompts_per_skill=1, images_per_prompt=1, steps=2)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("db") / "base"
    tiny_pipe().save_pretrained(out)
    return out


def test_one_finetune_per_demo_set_on_the_demos_given(base_dir):
    bench = build_benchmark(SMALL)
    system = resolve_system(f"db=dreambooth:{base_dir}@2", bench)
    assert system.name == "db" and isinstance(system.fn, DreamBoothSystem) and system.fn.steps == 2
    a, b = bench.items[0].subject, bench.items[-1].subject
    assert a != b
    da, ca = list(bench.demo_images(a)), list(bench.by_key[a].demo_captions)
    first = system.fn(da, ca, bench.items[0].prompt, 0)
    system.fn(da, ca, "a red ball on the beach", 1)
    assert len(system.fn.seconds) == 1  # the same subject is fine-tuned once, whatever the prompt
    system.fn(list(bench.demo_images(b)), list(bench.by_key[b].demo_captions), "a red ball on the beach", 1)
    assert len(system.fn.seconds) == 2
    assert np.asarray(first).shape == (16, 16, 3)
    tuned = next(iter(system.fn.pipes.values())).unet.state_dict()
    base = tiny_pipe().unet.state_dict()
    assert any(not torch.equal(tuned[k].float(), base[k].float()) for k in base)  # the UNet really trained
    photos = sorted((system.fn.work / "subject-000" / "photos").glob("*.png"))
    assert len(photos) == len(da)  # fine-tuned on the demos, not on the world's own renders


def test_bad_dreambooth_specs_are_named(base_dir):
    bench = build_benchmark(SMALL)
    with pytest.raises(InputError, match="step count"):
        resolve_system(f"dreambooth:{base_dir}@many", bench)
    with pytest.raises(InputError, match="not found"):
        resolve_system("dreambooth:/nonexistent/model@2", bench)
    with pytest.raises(InputError, match="base model directory"):
        resolve_system("dreambooth", bench)


def test_a_batch_over_two_subjects_fine_tunes_each_once_and_equals_single_calls(base_dir):
    bench = build_benchmark(SMALL)
    a, b = bench.items[0].subject, bench.items[-1].subject
    da, ca = list(bench.demo_images(a)), list(bench.by_key[a].demo_captions)
    db, cb = list(bench.demo_images(b)), list(bench.by_key[b].demo_captions)
    system = resolve_system(f"dreambooth:{base_dir}@2", bench).fn
    requests = [(da, ca, "a red ball on the beach", 0), (db, cb, "a red ball in the snow", 1),
                (da, ca, "a red ball in the snow", 2)]  # fmt: skip
    batched = system.batch(requests)
    assert len(batched) == 3 and len(system.seconds) == 2  # one fine-tune per subject
    singles = [system(*r) for r in requests]
    assert len(system.seconds) == 2  # the single calls reuse the fine-tuned models
    for got, want in zip(batched, singles):
        assert np.abs(np.asarray(got, np.int16) - np.asarray(want, np.int16)).max() <= 1
    assert not np.array_equal(np.asarray(batched[0]), np.asarray(batched[2]))  # its own prompt and seed
