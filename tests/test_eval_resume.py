"""`suti eval auto --resume` and `--shard K/N`: a killed run's outputs are kept, shards generate disjoint
blocks of subjects, and shards merged then graded with --resume equal one whole run."""

from __future__ import annotations

import json
import shutil

import pytest

from suti.errors import InputError
from suti.eval.benchmark import BenchmarkConfig, build_benchmark
from suti.eval.runner import run_benchmark, shard_subjects
from suti.eval.systems import NamedSystem

SMALL = BenchmarkConfig(subjects=3, prompts_per_skill=1, images_per_prompt=1, steps=2)


class Counting:
    """A system that returns its first demo and counts its calls (deterministic, like a seeded sampler)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, demos, captions, prompt, seed):
        self.calls += 1
        return demos[(len(prompt) + seed) % len(demos)]


@pytest.fixture(scope="module")
def graders():
    from suti.eval.graders import Graders

    return Graders.load()


def _scores(out):
    return {r["item_id"]: r["scores"]["sys"] for r in map(json.loads, (out / "items.jsonl").read_text().splitlines())}


def test_shards_are_disjoint_contiguous_and_cover_every_subject():
    bench = build_benchmark(SMALL)
    parts = [shard_subjects(bench, (k, 2)) for k in (1, 2)]
    keys = [s.key for s in bench.subjects]
    assert parts[0] | parts[1] == set(keys) and not parts[0] & parts[1]
    assert parts[0] == set(keys[:2])  # nearly equal contiguous blocks, the first takes the extra one
    for bad in ((0, 2), (3, 2), (1, 4)):
        with pytest.raises(InputError, match="shard"):
            shard_subjects(bench, bad)


def test_merged_shards_graded_with_resume_equal_one_whole_run(tmp_path, graders):
    bench = build_benchmark(SMALL)
    whole_sys = Counting()
    whole = run_benchmark(bench, [NamedSystem("sys", "test", whole_sys)], tmp_path / "whole", graders, progress=False)
    shard_calls = []
    for k in (1, 2):
        fn = Counting()
        run_benchmark(bench, [NamedSystem("sys", "test", fn)], tmp_path / f"s{k}", None, progress=False, shard=(k, 2))
        shard_calls.append(fn.calls)
    assert sum(shard_calls) == whole_sys.calls == len(bench.items) and min(shard_calls) > 0
    merged = tmp_path / "merged"
    shutil.copytree(tmp_path / "s1", merged)
    for png in (tmp_path / "s2" / "outputs" / "sys").iterdir():
        shutil.copy(png, merged / "outputs" / "sys" / png.name)
    idle = Counting()
    got = run_benchmark(bench, [NamedSystem("sys", "test", idle)], merged, graders, progress=False, resume=True)
    assert idle.calls == 0  # every output was there: nothing generated again
    assert got["systems"]["sys"]["overall"] == whole["systems"]["sys"]["overall"]
    assert _scores(merged) == _scores(tmp_path / "whole")


def test_resume_regenerates_only_missing_or_broken_outputs(tmp_path):
    bench = build_benchmark(SMALL)
    out = tmp_path / "e"
    run_benchmark(bench, [NamedSystem("sys", "test", Counting())], out, None, progress=False)
    folder = out / "outputs" / "sys"
    pngs = sorted(folder.iterdir())
    before = {p.name: p.read_bytes() for p in pngs}
    pngs[0].unlink()  # missing
    pngs[1].write_bytes(pngs[1].read_bytes()[:40])  # cut short, as by a kill during the write
    fn = Counting()
    run_benchmark(bench, [NamedSystem("sys", "test", fn)], out, None, progress=False, resume=True)
    assert fn.calls == 2
    assert {p.name: p.read_bytes() for p in sorted(folder.iterdir())} == before
    runs = json.loads((out / "runs.json").read_text())
    assert runs["sys"]["reused"] == len(bench.items) - 2
    fresh = Counting()
    run_benchmark(bench, [NamedSystem("sys", "test", fresh)], out, None, progress=False)  # no resume: all again
    assert fresh.calls == len(bench.items)


def test_bad_combinations_are_named(tmp_path, graders, capsys):
    from tools.eval_auto import main

    bench = build_benchmark(SMALL)
    system = [NamedSystem("sys", "test", Counting())]
    with pytest.raises(InputError, match="only generates"):
        run_benchmark(bench, system, tmp_path / "a", graders, progress=False, shard=(1, 2))
    with pytest.raises(InputError, match="choose one"):
        run_benchmark(bench, system, tmp_path / "b", None, progress=False, resume=True, overwrite=True)
    args = ["auto", "--out", str(tmp_path / "c"), "--subjects", "1", "--no-progress", "--system", "copy"]
    assert main(args + ["--shard", "1/1"]) == 2
    assert "--no-grade" in capsys.readouterr().err
    assert main(args + ["--shard", "one/two", "--no-grade"]) == 2
    assert "K/N" in capsys.readouterr().err
    assert main(args + ["--shard", "1/1", "--no-grade"]) == 0
    made = len(list((tmp_path / "c" / "outputs" / "copy").iterdir()))
    assert made == len(build_benchmark(BenchmarkConfig(subjects=1)).items)
