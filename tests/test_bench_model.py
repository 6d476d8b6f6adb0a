"""tools.bench.model_bench: P2/P3 timing on a preset or on a saved pipeline directory."""

from __future__ import annotations

import json

import pytest

from tools.bench.model_bench import main

from _tiny import tiny_config, tiny_pipe


def test_times_a_saved_model_with_its_own_layout(tmp_path):
    pipe = tiny_pipe(tiny_config())
    pipe.subject.set_gates(0.25)
    pipe.save_pretrained(tmp_path / "model")
    out = tmp_path / "bench.json"
    assert main(["--out", str(out), "--model", str(tmp_path / "model"), "--steps", "1", "--batch", "1"]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == str(tmp_path / "model") and result["preset"] is None
    assert result["unet_params_m"] == round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 2)
    assert set(result["ratios"]) == {"P2_subject_2pass_over_text_2pass", "P2_dual_3pass_over_text_2pass",
                                     "P3_reencoded_over_cached", "P3_reencoded_over_cached_2pass"}  # fmt: skip
    assert all(len(v) == 5 and min(v) > 0 for v in result["cpu_seconds"].values())
    assert result["demo_pool_size"] is None
    # --pool: the same model with its demo feature maps pooled to 1 x 1 per level, fewer tokens.
    assert main(["--out", str(out), "--model", str(tmp_path / "model"), "--steps", "1", "--batch", "1",
                 "--pool", "1"]) == 0
    pooled = json.loads(out.read_text())
    assert pooled["demo_pool_size"] == 1
    assert pooled["demo_tokens_per_demo"] == len(pipe.subject.config.levels) < result["demo_tokens_per_demo"]


def test_a_directory_that_is_not_a_model_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "b.json"), "--model", str(tmp_path)])
    assert e.value.code == 2
    assert "not a saved SuTIPipeline directory" in capsys.readouterr().err
