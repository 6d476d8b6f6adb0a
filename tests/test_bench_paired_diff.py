"""tools.bench.paired_diff: per-item differences between EVAL_DIRs of the same prompts, CI over subjects."""

from __future__ import annotations

import json

import pytest

from tools.bench.paired_diff import main, paired_diffs


def _eval_dir(path, overall: list[float], prompts=None, system="suti"):
    path.mkdir(parents=True)
    rows = []
    for i, v in enumerate(overall):
        subject = f"s{i % 3:03d}"
        scores = {k: v for k in ("overall", "subject", "text", "realism", "traits", "dino")}
        rows.append({"item_id": f"{subject}-p{i:02d}-0", "subject": subject,
                     "prompt": (prompts or {}).get(i, f"prompt {i}"), "scores": {system: scores}})  # fmt: skip
    (path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_difference_is_per_item_and_pairing_removes_the_subject_spread(tmp_path):
    base = [0.1, 0.5, 0.9] * 4  # three subjects far apart
    a = _eval_dir(tmp_path / "a", base)
    b = _eval_dir(tmp_path / "b", [v + 0.05 for v in base])
    c = _eval_dir(tmp_path / "c", [v - 0.1 if i % 3 == 0 else v for i, v in enumerate(base)])
    got = paired_diffs([a, b, c])
    up = got[str(b)]["overall"]
    assert up["mean"] == pytest.approx(0.05) and up["ci"] == pytest.approx([0.05, 0.05])  # no spread left
    assert up["subjects_higher"] == 3 and up["n"] == 12
    down = got[str(c)]["overall"]
    assert down["mean"] == pytest.approx(-0.1 / 3, abs=1e-4) and down["subjects_higher"] == 0
    assert down["ci"][0] == pytest.approx(-0.1) and down["ci"][1] <= 0


def test_different_prompts_missing_system_and_one_dir_are_clear_errors(tmp_path, capsys):
    a = _eval_dir(tmp_path / "a", [0.2] * 3)
    other = _eval_dir(tmp_path / "other", [0.2] * 3, prompts={1: "something else"})
    named = _eval_dir(tmp_path / "named", [0.2] * 3, system="d5")
    for argv, words in (([str(a), str(other)], "asks different things"), ([str(a), str(named)], "'suti'"),
                        ([str(a)], "at least one other"), ([str(a), str(tmp_path / "none")], "not found")):
        assert main(argv) == 2
        assert words in capsys.readouterr().err
    out = tmp_path / "pd.json"
    assert main([str(a), str(named), "--system", "d5", "--out", str(out)]) == 2  # 'a' has no d5
    assert not out.exists()


def test_baseline_system_compares_two_systems_of_one_benchmark(tmp_path):
    base = [0.1, 0.5, 0.9] * 2
    db = _eval_dir(tmp_path / "db", base, system="dreambooth")
    suti = _eval_dir(tmp_path / "suti", [v + 0.2 for v in base])
    out = tmp_path / "pd.json"
    assert main([str(db), str(suti), "--baseline-system", "dreambooth", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["baseline_system"] == "dreambooth" and got["system"] == "suti"
    assert got["diffs"][str(suti)]["overall"]["mean"] == pytest.approx(0.2)
    assert main([str(db), str(suti)]) == 2  # without it, 'suti' is looked up in the baseline too
