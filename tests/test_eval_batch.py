"""Batched generation in `suti eval auto`: several items of one subject per system call, same images."""

from __future__ import annotations

import json
import numpy as np
import pytest
from PIL import Image

from _tiny import tiny_pipe
from suti.eval.benchmark import BenchmarkConfig, build_benchmark
from suti.eval.runner import _subject_chunks, run_benchmark
from suti.eval.systems import NamedSystem, resolve_system

SMALL = BenchmarkConfig(subjects=2, prompts_per_skill=1, images_per_prompt=2, steps=2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "model"
    tiny_pipe(gate=0.7).save_pretrained(out)
    return out


def _outputs(out, name):
    return {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted((out / "outputs" / name).glob("*.png"))}


class Counting:
    """Wraps a system, counting the calls it gets and the items per call."""

    def __init__(self, fn):
        self.fn, self.sizes = fn, []

    def __call__(self, *request):
        self.sizes.append(1)
        return self.fn(*request)

    def batch(self, requests):
        self.sizes.append(len(requests))
        return self.fn.batch(requests)


@pytest.mark.parametrize("spec", ["suti:{m}", "base:{m}", "suti:{m}@places=off,captions=off,demos=3"])
def test_batched_run_gives_the_images_of_single_calls(model_dir, tmp_path, spec):
    bench = build_benchmark(SMALL)
    per_subject = len(bench.items) // len(bench.subjects)
    outs = {}
    for size in (1, 4):
        system = resolve_system(spec.format(m=model_dir), bench)
        counting = Counting(system.fn)
        run_benchmark(bench, [NamedSystem("s", system.spec, counting)], tmp_path / f"b{size}", progress=False,
                      batch_size=size)
        outs[size] = _outputs(tmp_path / f"b{size}", "s")
        # items of one subject only per call, at most `size` of them
        expect = [min(size, per_subject - i) for _ in bench.subjects for i in range(0, per_subject, size)]
        assert counting.sizes == expect
    assert outs[1].keys() == outs[4].keys() and len(outs[1]) == len(bench.items)
    for name in outs[1]:  # float rounding may move a grey level, nothing more
        assert np.abs(outs[1][name] - outs[4][name]).max() <= 1, name


class FlakyBatch:
    """`batch` always fails; single calls fail on hat prompts only."""

    def __call__(self, demos, captions, prompt, seed):
        if "hat" in prompt:
            raise RuntimeError("no hats today")
        return demos[0]

    def batch(self, requests):
        raise MemoryError("batch too large")


class ShortBatch:
    def __call__(self, demos, captions, prompt, seed):
        return demos[-1]

    def batch(self, requests):
        return [requests[0][0][-1]]  # one image, whatever the request count


def test_a_failing_or_short_batch_falls_back_to_single_calls(tmp_path):
    bench = build_benchmark(SMALL)
    flaky, short = NamedSystem("flaky", "test", FlakyBatch()), NamedSystem("short", "test", ShortBatch())
    run_benchmark(bench, [flaky, short], tmp_path, progress=False, batch_size=8)
    runs = json.loads((tmp_path / "runs.json").read_text())
    hats = [it for it in bench.items if "hat" in it.prompt]
    assert hats and runs["flaky"]["failures"] == len(hats) and runs["flaky"]["batch_size"] == 8
    assert runs["short"]["failures"] == 0
    rows = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert {r["item_id"] for r in rows if "flaky" in r["failures"]} == {it.item_id for it in hats}
    assert all(r["failures"]["flaky"] == "RuntimeError: no hats today" for r in rows if "flaky" in r["failures"])
    assert len(_outputs(tmp_path, "flaky")) == len(bench.items) - len(hats)
    assert len(_outputs(tmp_path, "short")) == len(bench.items)


def test_chunks_keep_to_one_subject_and_the_size():
    bench = build_benchmark(SMALL)
    chunks = _subject_chunks(list(bench.items), 3)
    assert [it for c in chunks for it in c] == list(bench.items)
    assert all(len(c) <= 3 and len({it.subject for it in c}) == 1 for c in chunks)
    assert len(_subject_chunks(list(bench.items), 1)) == len(bench.items)
