"""tools.bench.dreambooth_sweep: the peak step count over EVAL_DIRs of one benchmark, ties to the fewest
steps, and named errors for mixed benchmarks, mixed bases and sweeps without DreamBooth."""

import json

import pytest

from tools.bench import dreambooth_sweep


def _score(mean: float) -> dict:
    return {"mean": mean, "ci": [max(mean - 0.01, 0.0), mean + 0.01], "n": 10}


def _eval_dir(path, systems: dict[str, tuple[str, float]], fingerprint="f00"):
    """An EVAL_DIR whose results.json holds `name: (spec, overall mean)`; other scores follow the overall."""
    path.mkdir()
    res = {"benchmark": {"fingerprint": fingerprint, "config": {"steps": 25}},
           "systems": {name: {"run": {"spec": spec, "seconds": 10.0}, "items": 10, "failures": 0,
                              **{m: _score(v) for m in dreambooth_sweep.METRICS}}
                       for name, (spec, v) in systems.items()}}  # fmt: skip
    (path / "results.json").write_text(json.dumps(res))
    return path


def test_peak_is_the_best_mean_over_all_dirs_and_the_default_is_the_recipe_count(tmp_path):
    a = _eval_dir(tmp_path / "a", {"dreambooth": ("dreambooth:models/world", 0.008),
                                   "suti": ("suti:models/world", 0.5)})  # not DreamBooth: ignored
    b = _eval_dir(tmp_path / "b", {"db100": ("dreambooth:models/world@100", 0.002),
                                   "db200": ("dreambooth:models/world@200", 0.012)})
    got = dreambooth_sweep.sweep([a, b])
    assert list(got["steps"]) == ["100", "200", str(got["recipe_default_steps"])]
    assert got["peak"]["steps"] == 200 and got["peak"]["overall"]["mean"] == 0.012
    assert got["peak"]["peak_at_edge"] is False and got["base"] == "models/world"
    assert got["steps"]["200"]["system"] == "b/db200"
    assert got["peak"]["inside_peak_ci"] == [100, got["recipe_default_steps"]]  # means >= the CI's low end 0.002
    assert dreambooth_sweep.sweep([b], metric="traits")["peak"]["peak_at_edge"] is True


def test_ties_go_to_the_fewest_steps(tmp_path):
    d = _eval_dir(tmp_path / "d", {"x": ("dreambooth:m@800", 0.01), "y": ("dreambooth:m@200", 0.01),
                                   "z": ("dreambooth:m@100", 0.0)})
    peak = dreambooth_sweep.sweep([d])["peak"]
    assert peak["steps"] == 200 and peak["inside_peak_ci"] == [100, 800]


@pytest.mark.parametrize("case, message", [
    ("fingerprint", "not comparable"), ("bases", "different bases"), ("none", "no dreambooth"),
    ("twice", "appear twice"), ("missing", "results.json not found"), ("metric", "--metric"),
])  # fmt: skip
def test_bad_sweeps_are_named(tmp_path, capsys, case, message):
    a = _eval_dir(tmp_path / "a", {"db": ("dreambooth:m@100", 0.0)})
    other = {"fingerprint": lambda p: _eval_dir(p, {"db": ("dreambooth:m@200", 0.0)}, fingerprint="f01"),
             "bases": lambda p: _eval_dir(p, {"db": ("dreambooth:other@200", 0.0)}),
             "none": lambda p: _eval_dir(p, {"s": ("suti:m", 0.0)}),
             "twice": lambda p: _eval_dir(p, {"db": ("dreambooth:m@100", 0.0)}),
             "missing": lambda p: p, "metric": lambda p: _eval_dir(p, {})}[case](tmp_path / "b")
    dirs = [str(other)] if case == "none" else [str(a), str(other)]
    extra = ["--metric", "beauty"] if case == "metric" else []
    out = tmp_path / "sweep.json"
    assert dreambooth_sweep.main([*dirs, *extra, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()
