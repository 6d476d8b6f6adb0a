"""tools.bench.eval_table: one system's scores across EVAL_DIRs of the same items, settings per row,
named errors for different items and a missing system."""

import json

import pytest

from tools.bench import eval_table


def _eval_dir(path, sampler="ddim", steps=25, subjects=4, overall=0.1, system="suti"):
    path.mkdir()
    cfg = {"subjects": subjects, "prompts_per_skill": 1, "images_per_prompt": 4, "demo_size": 32, "world_seed": 0,
           "demos": 0, "sampler": sampler, "steps": steps, "guidance_scale": 3.0, "subject_guidance_scale": 3.0}
    scores = {m: {"mean": overall, "ci": [overall / 2, overall * 2], "n": 4} for m in eval_table.METRICS}
    res = {"benchmark": {"fingerprint": f"{sampler}{steps}", "config": cfg, "items": subjects * 20},
           "systems": {system: {"items": subjects * 20, **scores}}}
    (path / "results.json").write_text(json.dumps(res))
    return path


def test_rows_keep_order_settings_and_scores(tmp_path):
    a = _eval_dir(tmp_path / "a", overall=0.02)
    b = _eval_dir(tmp_path / "b", sampler="ddpm", steps=100, overall=0.04)
    out = tmp_path / "t.json"
    assert eval_table.main([str(a), str(b), "--system", "suti", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert [(r["sampler"], r["steps"], r["overall"]["mean"]) for r in got["rows"]] == [("ddim", 25, 0.02),
                                                                                      ("ddpm", 100, 0.04)]
    assert got["rows"][1]["overall"]["ci"] == [0.02, 0.08] and got["rows"][0]["items"] == 80
    assert got["benchmark"]["subjects"] == 4


@pytest.mark.parametrize("case, message", [("items", "not be comparable"), ("system", "no system 'suti'"),
                                           ("missing", "results.json not found")])
def test_bad_tables_are_named(tmp_path, capsys, case, message):
    a = _eval_dir(tmp_path / "a")
    b = {"items": lambda p: _eval_dir(p, subjects=8), "system": lambda p: _eval_dir(p, system="base"),
         "missing": lambda p: p}[case](tmp_path / "b")
    out = tmp_path / "t.json"
    assert eval_table.main([str(a), str(b), "--system", "suti", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()
