"""suti.eval.runner/report/systems + `suti eval auto`: EVAL_DIR contract, failures, merging, CIs, CLI.

Uses the committed grader weights (no training) on a 2-subject x 5-prompt x 1-seed benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from suti.errors import ConfigError, InputError
from suti.eval.benchmark import BenchmarkConfig, build_benchmark
from suti.eval.report import asked_changes, bootstrap_mean
from suti.eval.runner import run_benchmark
from suti.eval.systems import NamedSystem, resolve_system
from suti.world import SKILLS, Context
from tools.bench import field_shown

SMALL = BenchmarkConfig(subjects=2, prompts_per_skill=1, images_per_prompt=1, steps=2)


def raises_on_hats(demos, captions, prompt, seed):
    if "hat" in prompt or "scarf" in prompt:
        raise RuntimeError("no hats today")
    return demos[0]


def nan_image(demos, captions, prompt, seed):
    return np.full((32, 32, 3), np.nan, np.float32)


def wrong_size(demos, captions, prompt, seed):
    return Image.new("RGB", (32, 20))


@pytest.fixture(scope="module")
def graders():
    from suti.eval.graders import Graders

    return Graders.load()


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory, graders):
    bench = build_benchmark(SMALL)
    out = tmp_path_factory.mktemp("eval")
    systems = [resolve_system("gt", bench), resolve_system("copy", bench),
               NamedSystem("hats", "test", raises_on_hats), NamedSystem("nan", "test", nan_image),
               NamedSystem("wrong", "test", wrong_size)]  # fmt: skip
    results = run_benchmark(bench, systems, out, graders, progress=False)
    return out, results, bench


def test_eval_dir_follows_the_contract(eval_dir):
    out, _, bench = eval_dir
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == [it.item_id for it in bench.items]
    for r in rows:
        assert set(r) >= {"item_id", "subject", "skill", "prompt", "seed", "demos", "demo_captions", "outputs", "scores"}
        assert r["skill"] in SKILLS and 3 <= len(r["demos"]) == len(r["demo_captions"]) <= 5
        for rel in r["demos"] + list(r["outputs"].values()):
            assert not Path(rel).is_absolute() and (out / rel).is_file()
        assert r["outputs"]["gt"] == f"outputs/gt/{r['item_id']}.png"
        for s in r["scores"].values():
            assert all(0.0 <= s[k] <= 1.0 for k in ("subject", "text", "realism", "overall"))
            assert s["overall"] == pytest.approx(np.sqrt(s["subject"] * s["text"]), abs=2e-3)  # 5-decimal rounding
    assert (out / "results.json").is_file() and (out / "report.html").is_file()


def test_failures_are_recorded_counted_and_scored_zero(eval_dir):
    out, results, bench = eval_dir
    systems = results["systems"]
    assert systems["nan"]["failures"] == systems["wrong"]["failures"] == len(bench.items)
    hats = sum(1 for it in bench.items if "hat" in it.prompt or "scarf" in it.prompt)
    assert 1 <= systems["hats"]["failures"] == hats < len(bench.items)
    assert systems["nan"]["overall"]["mean"] == 0.0
    assert systems["gt"]["failures"] == 0 and systems["copy"]["failures"] == 0
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert all("NaN" in r["failures"]["nan"] and "square" in r["failures"]["wrong"] for r in rows)
    assert "failed" in (out / "report.html").read_text()


def test_ground_truth_beats_copy_on_text_and_results_carry_cis_per_skill(eval_dir):
    _, results, _ = eval_dir
    gt, copy = results["systems"]["gt"], results["systems"]["copy"]
    assert gt["text"]["mean"] > copy["text"]["mean"] + 0.3
    for summary in (gt, *gt["skills"].values()):
        m = summary["overall"]
        assert m["ci"][0] <= m["mean"] <= m["ci"][1]
    assert set(gt["skills"]) == set(SKILLS)
    assert {e["system"] for e in results["images"]} == {"gt", "copy", "hats", "nan", "wrong"}
    assert results["systems"]["gt"]["run"]["kid"] is not None


def test_per_field_means_say_which_part_of_the_prompt_a_system_misses(eval_dir):
    out, results, _ = eval_dir
    gt, copy, nan = (results["systems"][n]["fields"] for n in ("gt", "copy", "nan"))
    assert {"shape", "pattern", "color", "scene"} <= set(gt)
    assert gt["shape"]["mean"] > 0.8 and copy["shape"]["mean"] > 0.8  # both show the subject's own shape
    for f in ("style", "scene", "accessory"):  # a copied demo misses the prompt's style, scene, accessory
        assert gt[f]["mean"] > copy[f]["mean"] + 0.15
    assert set(nan) == set(gt) and all(m["mean"] == 0.0 and m["n"] == gt[f]["n"] for f, m in nan.items())
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    graded = [r["fields"]["gt"]["shape"] for r in rows if "shape" in r["fields"]["gt"]]
    assert gt["shape"]["n"] == len(graded) and gt["shape"]["mean"] == pytest.approx(np.mean(graded), abs=1e-4)
    assert "P(prompted value shown), by field" in (out / "report.html").read_text()


def test_asked_changes_name_what_departs_from_the_identity_context():
    assert asked_changes(Context().to_dict()) == [("accessory:none", "accessory")]
    ctx = Context(scene="grass", recolor="red", accessory="hat", rotation=90, flip=True, scale="small").to_dict()
    assert asked_changes(ctx) == [("scene", "scene"), ("recolor", "color"), ("rotation", "pose"), ("flip", "pose"),
                                  ("scale", "scale"), ("accessory:hat", "accessory")]  # fmt: skip


def test_asked_changes_are_shown_by_ground_truth_not_by_a_copy(eval_dir, capsys):
    out, results, _ = eval_dir
    gt, copy, nan = (results["systems"][n]["asked"] for n in ("gt", "copy", "nan"))
    assert "accessory:none" in gt and len(gt) >= 4 and set(nan) == set(gt)
    for change, m in gt.items():
        if change != "accessory:none":  # a copied demo wears nothing, as asked there
            assert m["mean"] > copy[change]["mean"] + 0.3, change
    assert all(m["mean"] == 0.0 for m in nan.values())  # failures show nothing
    # the bench command reads the same table back from items.jsonl (older EVAL_DIRs have no "asked")
    assert field_shown.fields_shown([out], ["gt", "nan"])[out.as_posix()] == {"gt": gt, "nan": nan}
    assert "P(asked change shown)" in (out / "report.html").read_text()
    assert field_shown.main([str(out), "--system", "nobody"]) == 2
    assert "no system 'nobody'" in capsys.readouterr().err


def test_second_run_adds_a_system_and_keeps_the_others(eval_dir, graders):
    out, _, bench = eval_dir
    results = run_benchmark(bench, [resolve_system("copy2=copy", bench)], out, graders, progress=False)
    assert {"gt", "copy", "copy2", "hats"} <= set(results["systems"])
    assert results["systems"]["copy2"]["text"]["mean"] == pytest.approx(results["systems"]["copy"]["text"]["mean"])
    other = build_benchmark(BenchmarkConfig(subjects=3, prompts_per_skill=1, images_per_prompt=1))
    with pytest.raises(InputError, match="another benchmark"):
        run_benchmark(other, [resolve_system("copy", other)], out, None, progress=False)


def test_bootstrap_ci_is_seeded_and_resamples_subjects():
    values = np.array([0.0, 0.0, 1.0, 1.0, 0.5, 0.5])
    clusters = np.array(["a", "a", "b", "b", "c", "c"])
    one, two = bootstrap_mean(values, clusters), bootstrap_mean(values, clusters)
    assert one == two and one["mean"] == 0.5 and one["ci"][0] < 0.5 < one["ci"][1]
    assert bootstrap_mean(np.ones(4), np.array(list("abcd")))["ci"] == [1.0, 1.0]


def test_system_specs_resolve_or_fail_with_typed_errors():
    bench = build_benchmark(SMALL)
    assert resolve_system("floor=copy", bench).name == "floor"
    assert resolve_system("tests.test_eval_runner:nan_image", bench).name == "nan_image"
    with pytest.raises(InputError):
        resolve_system("dreambooth", bench)
    with pytest.raises(InputError, match="not found"):
        resolve_system("suti:/nonexistent/model", bench)
    with pytest.raises(ConfigError):
        resolve_system("tests.test_eval_runner:missing", bench)


def test_cli_auto_writes_a_report_and_reports_bad_input_as_exit_2(tmp_path, capsys):
    from tools.eval_auto import main

    args = ["auto", "--out", str(tmp_path / "e"), "--subjects", "1", "--images-per-prompt", "1", "--no-progress"]
    assert main(args + ["--system", "gt", "--system", "copy"]) == 0
    assert "gt: overall" in capsys.readouterr().out
    assert main(args + ["--system", "nonsense"]) == 2
    assert "error:" in capsys.readouterr().err
    for bad in (["--guidance", "nan"], ["--subject-guidance", "-1"]):
        assert main(args + ["--system", "gt"] + bad) == 2
        assert "guidance_scale must be" in capsys.readouterr().err
    assert main(args + ["--system", "gt", "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err


def test_guidance_overrides_change_the_benchmark_fingerprint():
    from dataclasses import replace

    from suti.eval.benchmark import QUICK

    for field, value in (("guidance_scale", QUICK.guidance_scale + 2.0),
                         ("subject_guidance_scale", QUICK.subject_guidance_scale - 2.0)):
        assert replace(QUICK, **{field: value}).check().fingerprint() != QUICK.fingerprint(), field
