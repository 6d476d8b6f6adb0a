"""The quick benchmark end to end through the CLI, with the bundled model (`models/world`).

Part of the default suite (about 80-100 s here): it is the CI proof that `suti eval auto --quick` with
every built-in system finishes within 5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import time

import pytest

QUICK_BUDGET_SECONDS = 300


@pytest.fixture(scope="module")
def world_pipeline_dir():
    """The bundled model: what `suti eval auto --quick` runs for a user (the `world_small` layout)."""
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "models" / "world"


def test_quick_benchmark_with_all_builtin_systems_runs_within_budget(tmp_path, world_pipeline_dir):
    from tools.eval_auto import main

    out = tmp_path / "quick"
    start = time.perf_counter()
    code = main(["auto", "--quick", "--out", str(out), "--no-progress", "--system", "gt", "--system", "copy",
                 "--system", f"base:{world_pipeline_dir}", "--system", f"suti:{world_pipeline_dir}"])  # fmt: skip
    seconds = time.perf_counter() - start
    assert code == 0
    assert seconds < QUICK_BUDGET_SECONDS, f"quick benchmark took {seconds:.0f} s"
    results = json.loads((out / "results.json").read_text())
    systems = results["systems"]
    assert set(systems) == {"gt", "copy", "base", "suti"}
    assert all(s["failures"] == 0 and s["items"] == 20 for s in systems.values())
    # the ceiling is far above a random-init model on both axes
    assert systems["gt"]["overall"]["mean"] > systems["suti"]["overall"]["mean"] + 0.3
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert all(set(r["outputs"]) == {"gt", "copy", "base", "suti"} for r in rows)
