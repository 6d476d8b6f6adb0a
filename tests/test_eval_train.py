"""Grader training code at tiny size (a few steps): files, open_clip/retrieval loading, losses, calibration.

These tests check the training code, not grader quality (the committed weights are tested in
test_eval_graders.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from suti.eval.train_graders import GraderTrainConfig, train_graders

    out = tmp_path_factory.mktemp("weights")
    manifest = train_graders(out, GraderTrainConfig.tiny(), progress=False, validate_after=False)
    return out, manifest


def test_tiny_training_writes_every_grader_file_with_a_manifest(tiny_weights):
    out, manifest = tiny_weights
    names = {"perception.safetensors", "perception.json", "pose.safetensors", "pose.json", "traits.safetensors",
             "traits.json", "calibration.json", "realism.safetensors", "suti-world-clip.json",
             "suti-world-clip.safetensors"}  # fmt: skip
    assert names <= {p.name for p in out.iterdir()}
    assert set(manifest["files"]) == names
    assert json.loads((out / "manifest.json").read_text())["command"] == "suti eval train-graders"
    assert manifest["traits_log"] and {"shape", "pattern"} <= set(manifest["traits_log"][-1])
    assert manifest["seconds"]["traits"] >= 0.0
    assert 0.0 <= manifest["clip_recall_heldout"]["recall@1"] <= manifest["clip_recall_heldout"]["recall@5"] <= 1.0


def test_world_clip_checkpoint_loads_with_open_clip_and_retrieval(tiny_weights):
    from retrieval import load_embedder
    from suti.eval.clip_world import (
        WORLD_CLIP_NAME,
        checkpoint_path,
        load_world_clip,
        world_clip_spec,
    )

    out, _ = tiny_weights
    open_clip.add_model_config(out / f"{WORLD_CLIP_NAME}.json")
    model = open_clip.create_model(WORLD_CLIP_NAME, pretrained=str(checkpoint_path(out)))
    clip = load_world_clip(out)
    for a, b in zip(model.state_dict().values(), clip.model.state_dict().values()):
        assert torch.equal(a, b)
    embedder = load_embedder(world_clip_spec(out))
    texts = ["a photo of a red striped ball", "a blue star on the beach"]
    assert np.allclose(embedder.embed_texts(texts), clip.embed_texts(texts), atol=1e-5)


def test_unused_token_rows_stay_zero_after_training(tiny_weights):
    from suti.eval.clip_world import load_world_clip, world_token_ids

    clip = load_world_clip(tiny_weights[0])
    weight = clip.model.token_embedding.weight.detach()
    used = torch.zeros(len(weight), dtype=torch.bool)
    used[world_token_ids(clip.tokenizer)] = True
    assert torch.count_nonzero(weight[~used]) == 0 and torch.count_nonzero(weight[used]) > 0


def test_tiny_graders_load_and_score_in_unit_interval(tiny_weights):
    from suti.eval.graders import Graders
    from suti.world import Context, caption, make_subject, render

    graders = Graders.load(tiny_weights[0])
    subject = make_subject(27)
    ctx = Context(scene="beach")
    rows = graders.score([render(subject, ctx, 32)], [subject], [caption(subject, ctx)], demos=[[render(subject)]])
    assert all(0.0 <= rows[0][k] <= 1.0 for k in ("subject", "text", "realism", "overall"))


def test_shape_and_pattern_probabilities_come_from_the_trait_net(tiny_weights):
    from suti.eval.graders import Graders
    from suti.eval.nets import TraitNet, load_net
    from suti.eval.probes import FIELDS
    from suti.world import Context, caption, make_subject, render

    graders = Graders.load(tiny_weights[0], with_clip=False)
    assert isinstance(graders.trait_net, TraitNet)
    subjects = [make_subject(i) for i in (27, 60)]
    ctx = Context(scene="beach")
    images = [render(s, ctx, 32) for s in subjects]
    probs = graders.probe_fields(images, subjects)
    for f in ("shape", "pattern"):
        assert probs[f].shape == (2, len(FIELDS[f])) and np.allclose(probs[f].sum(axis=1), 1.0, atol=1e-5)
    # a trait net that is sure of the true shape and pattern moves the fields of score() to 1
    sure = load_net(tiny_weights[0], "traits")
    with torch.no_grad():
        for f, value in (("shape", subjects[0].shape), ("pattern", subjects[0].pattern)):
            sure.heads[f].weight.zero_()
            sure.heads[f].bias.fill_(-20.0)
            sure.heads[f].bias[FIELDS[f].index(value)] = 20.0
    graders.trait_net = sure
    row = graders.score(images[:1], subjects[:1], [caption(subjects[0], ctx)], contexts=[ctx])[0]
    assert row["fields"]["shape"] > 0.999 and row["fields"]["pattern"] > 0.999
    # without a trait net (an older weights folder) the PerceptionNet probes answer
    graders.trait_net = None
    assert np.allclose(graders.probe_fields(images, subjects)["shape"], graders.perceive(images).probs["shape"])


def test_older_weight_folders_without_a_trait_net_still_load(tiny_weights, tmp_path):
    import shutil

    from suti.eval.graders import Graders

    shutil.copytree(tiny_weights[0], tmp_path / "old")
    for name in ("traits.safetensors", "traits.json"):
        (tmp_path / "old" / name).unlink()
    assert Graders.load(tmp_path / "old", with_clip=False).trait_net is None


def test_cli_parts_traits_retrains_only_the_trait_net(tiny_weights, tmp_path):
    import shutil

    from retrieval.atomic import sha256_file
    from tools.eval_auto import main

    out = tmp_path / "w"
    shutil.copytree(tiny_weights[0], out)
    (out / "traits.safetensors").unlink()
    before = {p.name: sha256_file(p) for p in out.iterdir() if p.name != "manifest.json"}
    code = main(["train-graders", "--tiny", "--out", str(out), "--parts", "traits", "--no-validate", "--no-progress"])
    assert code == 0
    after = {p.name: sha256_file(p) for p in out.iterdir() if p.name != "manifest.json"}
    assert {k: v for k, v in after.items() if k != "traits.safetensors"} == before  # nothing else rewritten
    # deterministic: the retrained trait net is byte-identical to the one of the full tiny run
    assert after["traits.safetensors"] == tiny_weights[1]["files"]["traits.safetensors"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parts_retrained_last"] == ["traits"]
    assert main(["train-graders", "--tiny", "--out", str(out), "--parts", "traits,nope", "--no-validate"]) != 0


def test_supcon_loss_prefers_embeddings_that_group_by_label():
    from suti.eval.identity import supcon_loss

    labels = torch.tensor([0, 0, 1, 1])
    good = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]]), dim=1)
    bad = good[[0, 2, 1, 3]]
    assert supcon_loss(good, labels) < supcon_loss(bad, labels)


def test_calibration_recovers_a_known_logistic_curve():
    from suti.eval.identity import fit_calibration

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 20000)
    y = rng.random(20000) < 1 / (1 + np.exp(-(8 * x - 2)))
    cal = fit_calibration(x[y], x[~y])
    p = cal(np.array([-0.5, 0.25, 0.9]))
    assert p[0] < 0.1 and p[2] > 0.9 and cal.a > 0


def test_realism_p_values_are_calibrated_survive_saving_and_kid_separates_distributions(tmp_path):
    from suti.eval.realism import ALPHA, fit_realism, kid, load_realism

    rng = np.random.default_rng(0)
    bank, calib, fresh = (rng.standard_normal((n, 12)) for n in (400, 400, 400))
    model = fit_realism(bank, calib, dim=8)
    model.save(tmp_path / "r.safetensors")
    assert np.allclose(load_realism(tmp_path / "r.safetensors").score(fresh), model.score(fresh), atol=1e-3)
    scores = model.score(fresh)
    assert abs(np.mean(scores == 1.0) - (1 - ALPHA)) < 0.06
    assert model.score(rng.standard_normal((50, 12)) * 5 + 10).max() < 0.05
    assert abs(kid(fresh, calib)) < 0.05 < kid(fresh + 2.0, calib)
