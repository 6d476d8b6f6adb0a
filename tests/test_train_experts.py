"""Experts: the CLIP filter keeps only what passes; a tiny end-to-end run writes the filtered dataset."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from suti.errors import ConfigError  # noqa: E402
from suti.train.experts import ExpertsConfig, filter_outputs, overall_score  # noqa: E402


def test_filter_keeps_only_outputs_over_the_threshold():
    rng = np.random.default_rng(0)
    subject, text = rng.uniform(-0.2, 1, 200), rng.uniform(-0.2, 1, 200)
    overall = overall_score(subject, text)
    keep = filter_outputs(subject, text, keep_fraction=1.0, min_score=0.5)
    assert keep.any() and (overall[keep] >= 0.5).all() and (overall[~keep] < 0.5).all()
    keep = filter_outputs(subject, text, keep_fraction=0.1, min_score=0.0)
    assert keep.sum() == 20 and overall[keep].min() >= overall[~keep].max()  # the top 10 %
    keep = filter_outputs(subject, text, keep_fraction=0.5, min_score=0.9)
    assert (overall[keep] >= 0.9).all() and keep.sum() == (overall >= 0.9).sum() < 100
    assert not filter_outputs(np.array([0.9, -0.5]), np.array([-0.1, 0.9]), 1.0, 0.01).any()  # negatives score 0


def test_bad_experts_config_is_a_config_error():
    with pytest.raises(ConfigError, match="keep_fraction"):
        ExpertsConfig(keep_fraction=0.0).validate()
    with pytest.raises(ConfigError, match="clusters"):
        ExpertsConfig(clusters=0).validate()


@pytest.mark.slow
def test_tiny_experts_run_writes_only_kept_rows(tmp_path):
    import datasets

    from suti.eval.clip_world import load_world_clip, new_world_clip, save_world_clip
    from suti.train.experts import run_experts

    model, _ = new_world_clip(tmp_path / "clip")
    save_world_clip(model, tmp_path / "clip")
    cfg = ExpertsConfig(recipe="dreambooth_tiny", clusters=2, prompts_per_cluster=4, keep_fraction=0.5,
                        min_score=-1.0, sample_steps=2)
    report = run_experts(cfg, tmp_path / "out", load_world_clip(tmp_path / "clip"), progress=False)
    assert report["clusters"] == 2 and report["outputs"] == 8 and report["kept"] == 4
    assert json.loads((tmp_path / "out" / "experts.json").read_text())["kept_ratio"] == 0.5
    ds = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    assert len(ds) == 4 and {"image", "caption", "subject_id", "score"} <= set(ds.column_names)
    assert report["mean_score_kept"] >= report["mean_score_all"]

    import dataclasses

    import torch

    from suti.train.data import make_source
    from suti.train.recipe import load_recipe

    recipe = load_recipe("apprentice_tiny")
    recipe = dataclasses.replace(recipe, apprentice=dataclasses.replace(
        recipe.apprentice, expert_fraction=1.0, expert_dataset=str(tmp_path / "out" / "dataset")))
    batch = make_source(recipe, lambda t: torch.zeros(len(t), 4, dtype=torch.long), 16).batch(0)
    assert batch["target"].shape == (4, 3, 16, 16)  # apprentice targets from the experts dataset
