"""A recipe can reshape the subject layers of the model it starts from (new levels / blocks / no captions)."""

import dataclasses

import numpy as np
import pytest
import torch

from _tiny import demo_images, run, tiny_pipe
from suti.errors import ConfigError
from suti.train.recipe import SubjectOverrides, TrainRecipe, load_recipe


def test_new_blocks_start_closed_and_fitting_weights_are_carried_over(tmp_path):
    from suti.pipeline import SuTIPipeline
    from suti.train.model import TrainModule, build_pipeline

    start = tiny_pipe(gate=0.5)  # a "trained" model: open gates on its default (lowest-resolution) blocks
    start.save_pretrained(tmp_path / "start")
    old_sd = start.subject.subject_state_dict()
    blocks = [f"down.{i}" for i in range(len(start.unet.down_blocks))] + ["mid"] + \
        [f"up.{i}" for i in range(len(start.unet.up_blocks))]
    every = tuple(b for b in blocks if _has_cross_attention(start.unet, b))  # demo attention everywhere
    overrides = SubjectOverrides(levels=("down.0", "mid"), attn_blocks=every, caption_tokens=False)
    recipe = dataclasses.replace(load_recipe("apprentice_tiny"), init_from=str(tmp_path / "start"),
                                 subject_overrides=overrides)
    pipe = build_pipeline(recipe)
    cfg = pipe.subject.config
    assert cfg.levels == ("down.0", "mid") and not cfg.caption_tokens and pipe.suti_config.subject == cfg
    assert len(pipe.subject.paths) > len(start.subject.paths)
    new_sd = pipe.subject.subject_state_dict()
    for path in start.subject.paths:  # the old blocks keep their trained weights, gates included
        key = f"subject.attn.{path}.gate"
        assert torch.equal(new_sd[key], old_sd[key].to(new_sd[key].dtype))
    for path in set(pipe.subject.paths) - set(start.subject.paths):
        assert pipe.subject.processor(path).gate.item() == 0.0  # new blocks start closed
    assert torch.equal(new_sd["subject.demo_encoder.proj.mid.weight"], old_sd["subject.demo_encoder.proj.mid.weight"])
    assert "subject.demo_encoder.proj.down_0.weight" in new_sd  # the new level has its own head
    out = run(pipe, "a red circle", demo_images(3), steps=2)
    assert np.isfinite(out).all()
    module = TrainModule(pipe, recipe)
    assert "subject.demo_encoder.proj.down_0.weight" in module.trainable()
    pipe.save_pretrained(tmp_path / "reshaped")
    loaded = SuTIPipeline.from_pretrained(tmp_path / "reshaped")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.subject.config == cfg
    assert np.array_equal(run(loaded, "a red circle", demo_images(3), steps=2), out)


def _has_cross_attention(unet, block: str) -> bool:
    if block == "mid":
        return getattr(unet.mid_block, "has_cross_attention", False)
    kind, i = block.split(".")
    return getattr((unet.down_blocks if kind == "down" else unet.up_blocks)[int(i)], "has_cross_attention", False)


def test_overrides_are_checked_and_need_a_start_model():
    data = load_recipe("apprentice_tiny").to_dict()
    data["subject_overrides"] = {"levels": ["up.3"]}
    data["init_from"] = "runs/x"
    with pytest.raises(ConfigError, match="subject_overrides.levels"):
        TrainRecipe.from_dict(data)
    data["subject_overrides"] = {"caption_tokens": False}
    data["init_from"] = None
    with pytest.raises(ConfigError, match="needs init_from"):
        TrainRecipe.from_dict(data)


@pytest.mark.parametrize("kind", ["base", "apprentice"])
def test_text_lr_scale_gives_the_text_encoder_its_own_learning_rate(kind):
    from suti.train.loop import make_optimizer
    from suti.train.model import TrainModule

    recipe = load_recipe(f"{kind}_tiny")
    if kind == "apprentice":  # the text encoder trains only with the base
        recipe = dataclasses.replace(recipe, apprentice=dataclasses.replace(recipe.apprentice, train_base=True))
    plain = make_optimizer(TrainModule(tiny_pipe(gate=None), recipe), recipe)
    scaled_recipe = dataclasses.replace(recipe, optim=dataclasses.replace(recipe.optim, text_lr_scale=5.0))
    module = TrainModule(tiny_pipe(gate=None), scaled_recipe)
    scaled = make_optimizer(module, scaled_recipe)
    text_ids = {id(p) for p in module.text_encoder.parameters()}
    assert len(scaled.param_groups) == len(plain.param_groups) + 1  # scale 1 keeps the old group layout
    base_lr = next(g["base_lr"] for g in plain.param_groups if not any(id(p) in text_ids for p in g["params"])
                   and len(g["params"]) > 2)
    text_group = [g for g in scaled.param_groups if g["params"] and all(id(p) in text_ids for p in g["params"])]
    assert len(text_group) == 1 and len(text_group[0]["params"]) == len(text_ids)
    assert text_group[0]["base_lr"] == pytest.approx(5.0 * base_lr)
    with pytest.raises(ConfigError, match="text_lr_scale"):
        dataclasses.replace(recipe.optim, text_lr_scale=0.0).validate()


def test_pool_size_override_keeps_every_weight_and_pools_the_demo_tokens(tmp_path):
    from suti.train.model import build_pipeline

    start = tiny_pipe(gate=0.5)
    start.save_pretrained(tmp_path / "start")
    recipe = dataclasses.replace(load_recipe("apprentice_tiny"), init_from=str(tmp_path / "start"),
                                 subject_overrides=SubjectOverrides(pool_size=2))
    pipe = build_pipeline(recipe)
    assert pipe.subject.config.pool_size == 2 and pipe.suti_config.subject.pool_size == 2
    old_sd, new_sd = start.subject.subject_state_dict(), pipe.subject.subject_state_dict()
    assert old_sd.keys() == new_sd.keys()
    assert all(torch.equal(new_sd[k], old_sd[k].to(new_sd[k].dtype)) for k in old_sd)
    enc_old, enc_new = start.subject.demo_encoder, pipe.subject.demo_encoder
    caption = 0 if not enc_new.caption_tokens else start.tokenizer.model_max_length
    assert enc_new.tokens_per_demo(pipe.unet, caption) < enc_old.tokens_per_demo(start.unet, caption)
    assert enc_new.tokens_per_demo(pipe.unet, caption) == 4 * len(enc_new.levels) + caption
    assert not np.array_equal(run(pipe, "a red circle", demo_images(3), steps=2),
                              run(start, "a red circle", demo_images(3), steps=2))
    with pytest.raises(ConfigError, match="pool_size"):
        SubjectOverrides(pool_size=0).validate()
