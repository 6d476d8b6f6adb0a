"""Recipes and on-the-fly world batches: typed configs, determinism per step, splits, dropout, timesteps."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from suti.errors import ConfigError
from suti.train.data import ApprenticeSource, DreamBoothSource, WorldSource, make_source
from suti.train.recipe import TrainRecipe, load_recipe, recipe_names
from suti.world import split_of


def _tokenize(texts):  # a stand-in tokenizer: enough for batch shapes (word count, padded)
    ids = torch.zeros(len(texts), 12, dtype=torch.long)
    for i, t in enumerate(texts):
        ids[i, : len(t.split())] = 5
    return ids


def test_every_recipe_loads_and_round_trips():
    assert {"base", "base_tiny", "dreambooth", "dreambooth_tiny", "apprentice", "apprentice_tiny"} <= set(recipe_names())
    for name in recipe_names():
        r = load_recipe(name)
        assert TrainRecipe.from_dict(json.loads(r.to_json())) == r


def test_training_model_configs_load_and_budget_recipe_trains_the_bundled_layout():
    from pathlib import Path

    from suti.models.config import SuTIConfig
    from suti.models.subject_layers import CONFIG_NAME
    from suti.pipeline.loading import SUBJECT_DIR
    from suti.train.model import model_config
    from suti.train.recipe import recipe_dir

    for path in (recipe_dir() / "models").glob("*.json"):
        assert model_config(path.stem).unet.sample_size > 0
    # the from-scratch budget recipe must build the layout the bundled model was trained in
    budget = load_recipe("apprentice_budget")
    assert budget.init_from is None
    saved = json.loads((Path(__file__).parents[1] / "models" / "world" / SUBJECT_DIR / CONFIG_NAME).read_text())
    bundled = SuTIConfig.from_dict(saved["model"])
    built = model_config(budget.model)
    assert (built.subject, built.unet, built.text, built.scheduler) == (bundled.subject, bundled.unet, bundled.text,
                                                                       bundled.scheduler)
    # the staged budget plan: a text-to-image stage on the same layout, then the apprentice from its run
    base, staged = load_recipe("base_budget"), load_recipe("apprentice_budget_staged")
    assert (base.kind, base.model, base.init_from) == ("base", budget.model, None)
    assert staged.kind == "apprentice" and staged.apprentice.train_base and staged.init_from.endswith("-base")


@pytest.mark.parametrize("patch, field", [({"loop": {"batch_size": 0}}, "loop.batch_size"),
                                          ({"kind": "finetune"}, "kind"),
                                          ({"apprentice": {"min_demos": 4, "max_demos": 2}}, "apprentice"),
                                          ({"noise": {"high_noise_fraction": 1.5}}, "noise.high_noise_fraction"),
                                          ({"optim": {"lr": "fast"}}, "optim.lr"),
                                          ({"loop": {"epochs": 3}}, "loop.epochs")])
def test_bad_recipe_fields_are_named(tmp_path, patch, field):
    data = load_recipe("base_tiny").to_dict()
    for k, v in patch.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) else v
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_recipe(path)


def test_batches_are_a_function_of_step_and_rank():
    src = make_source(load_recipe("base_tiny"), _tokenize, 16)
    a, b = src.batch(3, 0, 0), src.batch(3, 0, 0)
    assert torch.equal(a["target"], b["target"]) and torch.equal(a["text_ids"], b["text_ids"])
    assert not torch.equal(a["target"], src.batch(4, 0, 0)["target"])
    assert not torch.equal(a["target"], src.batch(3, 0, 1)["target"])  # the other process sees other samples
    assert a["target"].shape == (4, 3, 16, 16) and -1 <= a["target"].min() and a["target"].max() <= 1


def test_only_train_split_subjects_are_drawn():
    for kind in ("base_tiny", "apprentice_tiny"):
        src = make_source(load_recipe(kind), _tokenize, 16)
        assert src.pool and all(split_of(i, 0) == "train" for i in src.pool)


def test_apprentice_batch_shapes_padding_and_dropout():
    recipe = load_recipe("apprentice_tiny")
    recipe = dataclasses.replace(recipe, loop=dataclasses.replace(recipe.loop, batch_size=200))
    src = make_source(recipe, _tokenize, 16)
    assert isinstance(src, ApprenticeSource)
    b = src.batch(0)
    N = recipe.apprentice.max_demos
    assert b["demos"].shape == (200, N, 3, 16, 16) and b["demo_ids"].shape == (200, N, 12)
    counts = b["demo_mask"].sum(1)
    assert counts.min() >= recipe.apprentice.min_demos and counts.max() <= N
    assert (b["demos"][~b["demo_mask"]] == 0).all()  # padding slots are blank
    dropped = b["demo_weight"] == 0
    no_text = (b["text_ids"] != 0).sum(1) == 0
    assert 0.1 < dropped.float().mean() < 0.32  # 10 % demos + 10 % text-and-demos, of 200 samples
    assert (no_text <= dropped).all() and 0.02 < no_text.float().mean() < 0.2  # text only ever drops with demos


def test_dreambooth_batches_show_the_subject_with_its_identifier():
    recipe = load_recipe("dreambooth_tiny")
    src = make_source(recipe, _tokenize, 16)
    assert isinstance(src, DreamBoothSource) and len(src.photos) == recipe.dreambooth.num_photos
    assert recipe.dreambooth.subject_id not in src.pool
    texts = [t for _, t in src.photos]
    assert len(set(texts)) == len(texts)
    assert isinstance(make_source(load_recipe("base_tiny"), _tokenize, 16), WorldSource)


def test_high_noise_share_of_timesteps():
    from suti.train.model import sample_timesteps

    r = load_recipe("base_tiny")
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(20000, r, 1000, g)
    share = (t >= r.noise.high_noise_from).float().mean().item()
    expected = r.noise.high_noise_fraction + (1 - r.noise.high_noise_fraction) * (1 - r.noise.high_noise_from / 1000)
    assert abs(share - expected) < 0.02 and t.min() >= 0 and t.max() < 1000


def test_photo_demo_contexts_are_what_users_upload():
    import numpy as np

    from suti.train.data import demo_context
    from suti.world import make_subject

    rng = np.random.default_rng(0)
    subject = make_subject(3)
    contexts = [demo_context(rng, subject, slot, "photo") for slot in range(5) for _ in range(20)]
    assert all(c.style == "photo" and c.recolor == "" and c.accessory == "" and c.rotation == 0
               and not c.flip and c.scale == "normal" and c.position == "center" for c in contexts)
    assert all(c.scene == "plain" for c in contexts[:20])  # slot 0: the plain background
    assert len({c.scene for c in contexts[20:]}) > 3
    mixed = [demo_context(rng, subject, 1, "any") for _ in range(50)]
    assert any(c.skills and c.skills != ("recontextualization",) for c in mixed)  # "any" keeps every skill
    with pytest.raises(ConfigError, match="demo_contexts"):
        data = load_recipe("apprentice_tiny").to_dict()
        data["apprentice"]["demo_contexts"] = "selfies"
        TrainRecipe.from_dict(data)


def test_prompt_dropout_keeps_the_demos_and_the_three_shares_must_fit():
    recipe = load_recipe("apprentice_tiny")
    recipe = dataclasses.replace(recipe, loop=dataclasses.replace(recipe.loop, batch_size=400),
                                 apprentice=dataclasses.replace(recipe.apprentice, prompt_dropout=0.3))
    b = make_source(recipe, _tokenize, 16).batch(0)
    no_text = (b["text_ids"] != 0).sum(1) == 0
    demos_only = no_text & (b["demo_weight"] == 1)
    assert 0.22 < demos_only.float().mean() < 0.38  # 30 % text off with the demos kept
    assert 0.05 < (no_text & (b["demo_weight"] == 0)).float().mean() < 0.16  # the 10 % all-off share is unchanged
    data = load_recipe("apprentice_tiny").to_dict()
    data["apprentice"].update(demo_dropout=0.5, all_dropout=0.3, prompt_dropout=0.3)
    with pytest.raises(ConfigError, match="prompt_dropout must be <= 1"):
        TrainRecipe.from_dict(data)


def test_subject_weight_marks_the_subjects_pixels_only_when_asked():
    import numpy as np

    from suti.world import make_subject, render
    from suti.world.render import render_layers

    plain = make_source(load_recipe("apprentice_tiny"), _tokenize, 16).batch(2)
    assert "target_weight" not in plain
    recipe = load_recipe("apprentice_tiny")
    recipe = dataclasses.replace(recipe, noise=dataclasses.replace(recipe.noise, subject_weight=4.0))
    b = make_source(recipe, _tokenize, 16).batch(2)
    assert torch.equal(b["target"], plain["target"])  # the same pixels: weighting changes the loss only
    w = b["target_weight"]
    assert w.shape == (b["target"].shape[0], 1, 16, 16) and w.min() == 1.0 and w.max() == 4.0
    s = make_subject(5)
    layers = render_layers(s, None, 16)
    assert np.array_equal(np.asarray(layers.to_pil()), np.asarray(render(s, None, 16)))  # same render as the target
    with pytest.raises(ConfigError, match="noise.subject_weight"):
        data = recipe.to_dict()
        data["noise"]["subject_weight"] = 0.0
        TrainRecipe.from_dict(data)


def test_subject_margin_grows_the_weighted_region_around_the_outline():
    recipe = load_recipe("apprentice_tiny")
    noise = dataclasses.replace(recipe.noise, subject_weight=4.0)
    tight = make_source(dataclasses.replace(recipe, noise=noise), _tokenize, 16).batch(2)["target_weight"]
    grown = make_source(dataclasses.replace(recipe, noise=dataclasses.replace(noise, subject_margin=1)),
                        _tokenize, 16).batch(2)["target_weight"]
    assert torch.all(grown >= tight) and (grown > 1).sum() > (tight > 1).sum()  # a superset, strictly larger
    ring = (grown > 1) & (tight == 1)  # pixels weighted only thanks to the margin: next to the body
    near = torch.nn.functional.max_pool2d((tight > 1).float(), 3, stride=1, padding=1) > 0
    assert ring.any() and torch.all(near[ring])
    with pytest.raises(ConfigError, match="noise.subject_margin"):
        data = recipe.to_dict()
        data["noise"]["subject_margin"] = 9
        TrainRecipe.from_dict(data)


def test_shape_weight_marks_the_pixels_that_tell_the_shape_apart():
    import numpy as np

    from suti.world import SHAPES, Context, make_subject
    from suti.world.render import render_layers

    recipe = load_recipe("apprentice_tiny")
    on = dataclasses.replace(recipe, noise=dataclasses.replace(recipe.noise, shape_weight=5.0))
    source = make_source(on, _tokenize, 32)
    s = make_subject(5)
    ctx = Context(scene="jungle")
    image, masks = source.render_target(s, ctx)
    body, contrast, _ = masks
    others = [render_layers(dataclasses.replace(s, shape=k), ctx, 32).body for k in SHAPES if k != s.shape]
    assert np.allclose(contrast, np.mean([np.abs(body - b) for b in others], axis=0))
    assert 0 < contrast.sum() < body.sum() and 0.0 <= contrast.min() and contrast.max() <= 1.0
    assert contrast[body == 1.0].mean() < contrast[(body > 0) & (body < 1)].mean()  # the outline, not the inside
    assert np.array_equal(np.asarray(image), np.asarray(make_source(recipe, _tokenize, 32).render_target(s, ctx)[0]))
    b, plain = source.batch(2), make_source(recipe, _tokenize, 32).batch(2)
    assert torch.equal(b["target"], plain["target"])  # the same pixels: the weighting changes the loss only
    w = b["target_weight"]  # subject_weight is 1 here, so w - 1 is the shape contrast times 4
    assert w.shape == (b["target"].shape[0], 1, 32, 32) and w.min() == 1.0 and 1.0 < w.max() <= 5.0
    with pytest.raises(ConfigError, match="noise.shape_weight"):
        data = on.to_dict()
        data["noise"]["shape_weight"] = float("nan")
        TrainRecipe.from_dict(data)


def test_accessory_weight_marks_the_worn_accessory_and_nothing_when_none_is_worn():
    import numpy as np

    from suti.world import Context, make_subject
    from suti.world.render import render_layers

    recipe = load_recipe("apprentice_tiny")
    on = dataclasses.replace(recipe, noise=dataclasses.replace(recipe.noise, accessory_weight=6.0))
    source = make_source(on, _tokenize, 32)
    s = make_subject(5)
    _, hat = source.render_target(s, Context(accessory="hat"))
    _, bare = source.render_target(s, Context())
    assert np.array_equal(hat[2], render_layers(s, Context(accessory="hat"), 32).accessory)
    assert hat[2].sum() > 0 and not bare[2].any()  # a hat is marked; nothing worn, nothing marked
    assert (hat[2] * (1 - hat[0])).sum() > 0  # part of the hat lies outside the body that subject_weight marks
    w = source.loss_weights([hat, bare])["target_weight"]  # (2, 1, 32, 32)
    assert torch.allclose(w[0, 0], torch.from_numpy(1.0 + 5.0 * hat[2]))
    assert torch.equal(w[1], torch.ones_like(w[1]))
    b, plain = source.batch(2), make_source(recipe, _tokenize, 32).batch(2)
    assert torch.equal(b["target"], plain["target"])  # the same pixels: the weighting changes the loss only
    with pytest.raises(ConfigError, match="noise.accessory_weight"):
        data = on.to_dict()
        data["noise"]["accessory_weight"] = -1.0
        TrainRecipe.from_dict(data)


def test_weighted_loss_is_the_plain_mse_at_weight_one_and_follows_the_weights():
    from suti.train.model import TrainModule, build_pipeline

    recipe = load_recipe("apprentice_tiny")
    module = TrainModule(build_pipeline(recipe), recipe)
    b = make_source(recipe, lambda t: torch.zeros(len(t), module.text_encoder.config.max_position_embeddings,
                                                  dtype=torch.long), module.unet.config.sample_size).batch(0)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(b["target"].shape, generator=g)
    t = torch.randint(0, 1000, (b["target"].shape[0],), generator=g)
    torch.manual_seed(0)
    plain = module(**b, noise=noise, timesteps=t)
    ones = torch.ones(b["target"].shape[0], 1, *b["target"].shape[-2:])
    torch.manual_seed(0)
    assert torch.allclose(module(**b, noise=noise, timesteps=t, target_weight=ones), plain, rtol=1e-6)
    left = ones.clone()
    left[..., : left.shape[-1] // 2] = 0.0  # weight only the left half of every frame
    torch.manual_seed(0)
    weighted = module(**b, noise=noise, timesteps=t, target_weight=left)
    assert not torch.allclose(weighted, plain)


def test_apprentice_target_mix_sets_the_recolour_and_style_shares():
    import numpy as np

    from suti.world import allowed_recolors, sample_context

    recipe = load_recipe("apprentice_tiny")

    def contexts(**mix):
        r = dataclasses.replace(recipe, apprentice=dataclasses.replace(recipe.apprentice, **mix))
        src, rng = make_source(r, _tokenize, 16), np.random.default_rng(3)
        return src, [src.draw(rng) for _ in range(300)]

    src, default = contexts()
    rng = np.random.default_rng(3)  # the defaults draw what sample_context's own defaults draw
    s = src.subject(src.pool[int(rng.integers(len(src.pool)))])
    assert (s, sample_context(rng, s, allowed_recolors(s, "train"))) == default[0][:2]
    share = lambda draws, f: np.mean([f(ctx) for s, ctx, _ in draws if allowed_recolors(s, "train")])
    recoloured, styled, worn = (lambda c: c.recolor != ""), (lambda c: c.style != "photo"), (lambda c: c.accessory != "")
    assert 0.08 < share(default, recoloured) < 0.23 and 0.2 < share(default, styled) < 0.4
    assert 0.18 < share(default, worn) < 0.32
    turned = lambda c: c.rotation != 0  # noqa: E731
    assert 0.08 < share(default, turned) < 0.23
    _, more = contexts(recolor_fraction=0.6, style_fraction=0.0, accessory_fraction=0.7, view_fraction=0.5)
    assert 0.5 < share(more, recoloured) < 0.7 and share(more, styled) == 0.0 and 0.6 < share(more, worn) < 0.8
    assert 0.4 < share(more, turned) < 0.6 and 0.4 < share(more, lambda c: c.flip) < 0.6
    _, bare = contexts(accessory_fraction=0.0, view_fraction=0.0)
    assert share(bare, worn) == 0.0 and share(bare, turned) == 0.0 and share(bare, lambda c: c.scale != "normal") == 0.0
    data = recipe.to_dict()
    data["apprentice"]["recolor_fraction"] = 1.5
    with pytest.raises(ConfigError, match="recolor_fraction"):
        TrainRecipe.from_dict(data)
