"""tools/bench/catalog_bench.py at tiny sizes: writes its JSON with the expected keys; bad arguments exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.bench import catalog_bench

MODEL = Path(__file__).resolve().parents[1] / "models" / "world"


@pytest.fixture
def keep_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # main() sets one thread for the whole process


def test_tiny_run_writes_json(tmp_path, keep_threads):
    out = tmp_path / "catalog.json"
    argv = ["--out", str(out), "--subjects", "4", "--per-subject", "3", "--queries-per-subject", "2",
            "--gen-subjects", "1", "--steps", "1", "--retrieval-k", "3", "--model", str(MODEL)]  # fmt: skip
    assert catalog_bench.main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"catalog", "retrieval", "reimagen", "run"}
    assert report["catalog"]["subjects"] == 4 and report["catalog"]["entries"] == 12
    assert set(report["catalog"]["splits"]) == {"test_subject", "test_combo"}
    ret = report["retrieval"]
    assert ret["queries"] == 8
    for key in ("recall@1", "recall@5", "cluster_top1", "cluster_top1_bm25", "cluster_top1_vectors",
                "cluster_top1_without_omission"):
        assert 0.0 <= ret[key] <= 1.0
    assert ret["recall@1"] <= ret["recall@5"]
    gen = report["reimagen"]
    assert gen["subjects"] == 1 and len(gen["items"]) == 1
    assert set(gen["means"]) == {"reimagen", "reimagen_central", "oracle_demos", "oracle_central", "text_only",
                                 "ground_truth"}  # fmt: skip
    assert gen["member_order"] == "query"
    assert {"subject", "text", "overall"} <= set(gen["means"]["reimagen"])
    item = gen["items"][0]
    assert isinstance(item["retrieved_right_subject"], bool) and len(item["retrieved_ids"]) == 3
    assert len(item["oracle_ids_central"]) == 3 and all(i.startswith(f"s{item['subject_id']:05d}-")
                                                         for i in item["oracle_ids_central"])  # fmt: skip
    assert gen["means"]["ground_truth"]["subject"] > 0.5  # the ceiling reads as one


BAD = [["--subjects", "0"], ["--per-subject", "x"], ["--gen-subjects", "5", "--subjects", "3"],
       ["--guidance-scale", "nan"], ["--model", "/nonexistent"], ["--member-order", "random"]]


@pytest.mark.parametrize("argv", BAD)
def test_bad_arguments_exit_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        catalog_bench.main(["--out", str(tmp_path / "x.json"), *argv])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
