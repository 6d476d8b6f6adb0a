"""A 2-step run of each recipe through `suti train` (tools.train.main) on the tiny preset."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tools.train import main  # noqa: E402

PROMPT = "a red striped circle on the beach"


def _sample(pipe, demos=None, captions=None) -> np.ndarray:
    kw = dict(subject_images=demos, subject_captions=captions) if demos is not None else {}
    return pipe(PROMPT, num_inference_steps=3, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
                output_type="np", **kw).images


def _demos(size: int):
    from suti.world import Context, caption, make_subject, render

    s = make_subject(5)
    ctxs = [Context(), Context(scene="beach"), Context(style="sketch")]
    return [render(s, c, size) for c in ctxs], [caption(s, c) for c in ctxs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    codes = {k: main([k, "--config", f"{k}_tiny", "--out", str(root / k), "--no-progress"])
             for k in ("base", "dreambooth", "apprentice")}
    return root, codes


@pytest.mark.parametrize("kind", ["base", "dreambooth", "apprentice"])
def test_two_steps_write_checkpoints_logs_and_grid(runs, kind):
    root, codes = runs
    out = root / kind
    assert codes[kind] == 0
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-0000001", "step-0000002"]  # keep_last=2, checkpoint every step
    for f in ("trainable.safetensors", "state.pt", "config.json"):
        assert (out / "checkpoints" / "step-0000002" / f).is_file()
    cfg = json.loads((out / "checkpoints" / "step-0000002" / "config.json").read_text())
    assert cfg["recipe"]["kind"] == kind and cfg["model"]["name"] == "tiny"
    losses = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses] == [1, 2] and all(np.isfinite(r["loss"]) for r in losses)
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["step"] == 2 and metrics["x0_err_text"] > 0
    assert ("demo_gain" in metrics) == (kind == "apprentice")
    assert 0 < metrics["x0_err_text_subj"] and "text_gain_subj" in metrics  # the subject's own pixels
    assert ("demo_only_gain_subj" in metrics) == (kind == "apprentice")
    assert (out / "samples" / "step-0000002.png").is_file()


def test_checkpoints_hold_only_trainable_weights(runs):
    from safetensors.torch import load_file

    root, _ = runs
    names = {k: set(load_file(str(root / k / "checkpoints" / "step-0000002" / "trainable.safetensors")))
             for k in ("base", "dreambooth", "apprentice")}
    assert names["apprentice"] and all(n.startswith("subject.") for n in names["apprentice"])
    assert not any(n.startswith("subject.") for n in names["base"] | names["dreambooth"])
    assert any(n.startswith("text_encoder.") for n in names["base"])
    assert not any(n.startswith("text_encoder.") for n in names["dreambooth"])  # train_text_encoder: false


@pytest.mark.parametrize("kind", ["base", "dreambooth", "apprentice"])
def test_trained_model_loads_and_changes_the_output(runs, kind):
    from suti.pipeline import SuTIPipeline

    root, _ = runs
    trained = SuTIPipeline.from_pretrained(root / kind / "model")
    fresh = SuTIPipeline.from_config("tiny")
    for p in (trained, fresh):
        p.set_progress_bar_config(disable=True)
    demos, caps = _demos(trained.image_size) if kind == "apprentice" else (None, None)
    a, b = _sample(trained, demos, caps), _sample(fresh, demos, caps)
    assert a.shape == b.shape == (1, 16, 16, 3)
    assert np.abs(a - b).max() > 1e-4  # same base weights and seed: any difference is the training
    if kind == "apprentice":  # only subject layers trained: without demos the model is the fresh base
        assert np.abs(_sample(trained) - _sample(fresh)).max() < 1e-5
        assert any(abs(g) > 0 for g in trained.subject.gates().values())


def test_existing_run_needs_resume_and_kind_must_match(runs, capsys):
    root, _ = runs
    assert main(["base", "--config", "base_tiny", "--out", str(root / "base"), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["base", "--config", "apprentice_tiny", "--out", str(root / "x"), "--no-progress"]) == 2
    assert "not 'base'" in capsys.readouterr().err
    assert main(["base", "--config", "no_such_recipe", "--out", str(root / "y")]) == 2
    assert "neither a recipe name" in capsys.readouterr().err


def test_fp16_export_and_demo(runs, tmp_path, capsys):
    import PIL.Image

    from suti.pipeline import SuTIPipeline
    from tools.demo import main as demo_main

    root, _ = runs
    assert main(["export", str(root / "apprentice"), "--out", str(tmp_path / "m"), "--command", "suti train x"]) == 0
    info = json.loads((tmp_path / "m" / "training.json").read_text())
    assert info["step"] == 2 and info["dtype"] == "float16" and info["command"] == "suti train x"
    size = lambda d: sum(f.stat().st_size for f in d.rglob("*.safetensors"))  # noqa: E731
    assert size(tmp_path / "m") < 0.6 * size(root / "apprentice" / "model")
    half = SuTIPipeline.from_pretrained(tmp_path / "m", dtype=torch.float32)
    full = SuTIPipeline.from_pretrained(root / "apprentice" / "model")
    for p in (half, full):
        p.set_progress_bar_config(disable=True)
    demos, caps = _demos(full.image_size)
    assert np.abs(_sample(half, demos, caps) - _sample(full, demos, caps)).max() < 0.05  # fp16 rounding only

    png = tmp_path / "demo.png"
    assert demo_main(["--model", str(tmp_path / "m"), "--out", str(png), "--subjects", "1", "--steps", "2"]) == 0
    assert PIL.Image.open(png).size == (8 * 64, 2 * 64)  # 3 demos + 5 skills; outputs row + oracle row
    out = capsys.readouterr().out
    assert "demo_gain" in out and "gt overall" in out
    table = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in out.splitlines()
             if line.startswith("  ") and line.split()[0] in ("recontextualization", "view", "all")}  # fmt: skip
    assert len(table) == 3 and all(len(v) == 5 and all(0 <= x <= 1 for x in v) for v in table.values())
    assert demo_main(["--model", str(tmp_path / "nothing"), "--out", str(png)]) == 2
