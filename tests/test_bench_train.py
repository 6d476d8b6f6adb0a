"""tools/bench/train_bench.py at tiny sizes: P1 writes its JSON with the expected keys, the P6 reader takes
the loop's log window, bad arguments exit 2. (The 2-process P6 run itself is covered by the slow
test_train_accelerate.py; here its reader runs on a synthetic run directory.)"""

from __future__ import annotations

import inspect
import json

import pytest

from suti.pipeline import SuTIPipeline
from tools.bench import train_bench


@pytest.fixture
def keep_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # main() sets the thread count for the whole process


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from suti.pipeline import SuTIPipeline

    path = tmp_path_factory.mktemp("tiny_model")
    SuTIPipeline.from_config("tiny").save_pretrained(path)
    return path


def _sweep(path, base, steps=2):
    """A DreamBooth sweep JSON (tools.bench.dreambooth_sweep's keys that P1 reads) peaking at `steps`."""
    path.write_text(json.dumps({"base": str(base), "metric": "overall",
                                "peak": {"steps": steps, "overall": {"mean": 0.1}, "peak_at_edge": False}}))
    return path


@pytest.mark.parametrize("steps_from", ["flag", "sweep"])
def test_p1_tiny_writes_json(tmp_path, tiny_model, keep_threads, steps_from):
    out = tmp_path / "train.json"
    how = (["--dreambooth-steps", "2"] if steps_from == "flag" else
           ["--steps-from", str(_sweep(tmp_path / "sweep.json", tiny_model))])  # fmt: skip
    argv = ["--out", str(out), "--parts", "p1", "--model", str(tiny_model), "--dreambooth-recipe", "dreambooth_tiny",
            *how, "--steps", "2", "--demos", "3", "--threads", "1"]  # fmt: skip
    assert train_bench.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["parts"] == ["p1"] and "P6" not in report
    assert {"python", "torch", "accelerate", "cpu_count", "loadavg_start", "loadavg_end"} <= set(report["machine"])
    p1 = report["P1"]
    assert p1["dreambooth_steps"] == 2 and p1["sampler"] == "DDIMScheduler" and p1["sample_steps"] == 2
    if steps_from == "flag":
        assert "--dreambooth-steps" in p1["dreambooth_steps_source"] and "NOT" in p1["dreambooth_steps_note"]
        assert "dreambooth_sweep_peak" not in p1
    else:
        assert "--steps-from" in p1["dreambooth_steps_source"] and "overall peaks" in p1["dreambooth_steps_note"]
        assert p1["dreambooth_sweep_peak"]["file"] == "sweep.json" and p1["dreambooth_sweep_peak"]["steps"] == 2
    defaults = inspect.signature(SuTIPipeline.__call__).parameters  # P1 samples with the user's defaults
    assert p1["guidance"]["suti"]["guidance_scale"] == defaults["guidance_scale"].default
    assert p1["guidance"]["suti"]["subject_guidance_scale"] == defaults["subject_guidance_scale"].default
    assert p1["subject_split"] == "test_subject" and p1["dreambooth_prompt"].startswith("sks ")
    for key in ("encode_s", "sample_s", "first_image_s", "encode_cpu_s"):
        assert p1["suti"][key] > 0
    assert len(p1["suti"]["encode_s_all"]) == 5
    for key in ("finetune_s", "load_s", "sample_s", "first_image_s", "command_wall_s", "command_cpu_s"):
        assert p1["dreambooth"][key] >= 0
    names = set(train_bench.TARGETS)
    assert set(p1["ratios"]) == names == set(p1["ratios_with_command_wall"]) == set(p1["targets_met"])


def _fake_run(path, rows, processes=2, batch=16):
    path.mkdir()
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loop = {"batch_size": batch, "grad_accum": 1, "validate_every": 100, "checkpoint_every": 100}
    (path / "recipe.json").write_text(json.dumps({"loop": loop}))
    (path / "summary.json").write_text(json.dumps({"step": rows[-1]["step"], "steps_per_s": 0.1,
                                                   "samples_per_s": 3.2, "processes": processes}))


def test_p6_reader_uses_log_window(tmp_path):
    rows = [{"step": 10, "elapsed_s": 30.0, "cpu_s": 25.0}, {"step": 20, "elapsed_s": 50.0, "cpu_s": 45.0},
            {"step": 30, "elapsed_s": 70.0, "cpu_s": 65.0}]
    _fake_run(tmp_path / "run", rows)
    got = train_bench.read_throughput(tmp_path / "run")
    assert got["steps_per_s"] == 0.5 and got["samples_per_step"] == 32 and got["samples_per_s"] == 16.0
    assert got["source"].startswith("log.jsonl") and got["main_process_cpu_s_per_step"] == 2.0
    assert got["window_includes"] == {"validations": 0, "checkpoints": 0}
    rows = [{"step": s, "elapsed_s": e, "cpu_s": e} for s, e in ((90, 0.0), (100, 10.0), (110, 40.0), (120, 50.0))]
    _fake_run(tmp_path / "ckpt", rows, processes=1)  # validation + checkpoint after step 100: that interval is out
    got = train_bench.read_throughput(tmp_path / "ckpt")
    assert got["steps_per_s"] == 1.0 and got["samples_per_s"] == 16.0 and "2 of 3 intervals" in got["source"]
    assert train_bench.work_between({"validate_every": 100, "checkpoint_every": 100}, 100, 110)["checkpoints"] == 1
    _fake_run(tmp_path / "short", rows[-1:], processes=1)  # one line: no window, fall back to the summary
    got = train_bench.read_throughput(tmp_path / "short")
    assert got["source"] == "summary.json" and got["samples_per_s"] == 1.6


@pytest.mark.parametrize("bad", [
    ["--parts", "p2"], ["--parts", ""], ["--steps-p6", "0"], ["--steps-p6", "x"], ["--threads", "-1"],
    ["--dreambooth-steps", "0"], ["--repeats", "3"], ["--demos", "7"], ["--subject", "-2"],
    ["--parts", "p6", "--recipe", "base_tiny"], ["--parts", "p6", "--recipe", "no_such_recipe"],
    ["--parts", "p6", "--steps-p6", "15"], ["--parts", "p1", "--dreambooth-recipe", "apprentice_tiny"],
    ["--parts", "p1", "--model", "/no/such/model"], ["--parts", "p1", "--steps-from", "/no/such/sweep.json"],
])  # fmt: skip
def test_bad_arguments_exit_2(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as e:
        train_bench.main(["--out", str(tmp_path / "x.json"), *bad])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_steps_from_must_match_the_model_and_exclude_the_step_flag(tmp_path, tiny_model, capsys):
    sweep = _sweep(tmp_path / "sweep.json", tmp_path / "another_model")
    for extra in (["--steps-from", str(sweep)],
                  ["--steps-from", str(_sweep(tmp_path / "ok.json", tiny_model)), "--dreambooth-steps", "3"]):
        with pytest.raises(SystemExit) as e:
            train_bench.main(["--out", str(tmp_path / "x.json"), "--parts", "p1", "--model", str(tiny_model), *extra])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "not --model" in err and "give one" in err
