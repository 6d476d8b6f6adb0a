"""Pooled text conditioning (Imagen-style, diffusers' class_embed_type="projection") on the tiny preset."""

import dataclasses

import numpy as np
import pytest
import torch

from _tiny import CAPTIONS, demo_images, gen, run, tiny_config, tiny_pipe


def pooled_config():
    cfg = tiny_config()
    return dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, pooled_text=True))


def test_adding_pooled_text_leaves_the_model_unchanged_until_trained():
    from suti.models.pooled_text import add_pooled_text, uses_pooled_text

    pipe = tiny_pipe()
    before = run(pipe, "a red circle", demo_images(3), steps=3)
    assert not uses_pooled_text(pipe.unet) and add_pooled_text(pipe.unet)
    assert uses_pooled_text(pipe.unet) and not add_pooled_text(pipe.unet)  # a second call is a no-op
    assert np.array_equal(run(pipe, "a red circle", demo_images(3), steps=3), before)  # zero-initialised output
    torch.nn.init.normal_(pipe.unet.class_embedding.linear_2.weight, std=0.5)
    assert not np.array_equal(run(pipe, "a red circle", demo_images(3), steps=3), before)


def test_pooled_text_reaches_the_unet_and_the_demo_encoder():
    from suti.models.pooled_text import pooled_text

    pipe = tiny_pipe(pooled_config())
    torch.nn.init.normal_(pipe.unet.class_embedding.linear_2.weight, std=0.5)
    states, mask = pipe.encode_text(["a red circle", ""])
    pooled = pooled_text(pipe.unet, states, mask)  # (2, D): means over the real tokens only
    assert torch.allclose(pooled[1], states[1, mask[1]].mean(0), atol=1e-6)
    seen = []
    hook = pipe.unet.class_embedding.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    out = run(pipe, "a red circle", demo_images(3), steps=2, subject_captions=CAPTIONS[:3], guidance_scale=5.0)
    hook.remove()
    assert seen == [3, 3, 3] and np.isfinite(out).all()  # demos (3 captions), then 3 guidance passes per step


def test_pooled_text_model_batches_like_singles_and_round_trips(tmp_path):
    from suti.pipeline import SuTIPipeline

    pipe = tiny_pipe(pooled_config())
    torch.nn.init.normal_(pipe.unet.class_embedding.linear_2.weight, std=0.5)
    d3, d4 = demo_images(3, seed=0), demo_images(4, seed=1)
    one = run(pipe, "a red circle", d3, seed=0)
    two = run(pipe, "a blue star on the beach", d4, seed=1)
    both = pipe(["a red circle", "a blue star on the beach"], [d3, d4], num_inference_steps=3,
                generator=[gen(0), gen(1)], output_type="np").images
    np.testing.assert_allclose(both[0], one[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(both[1], two[0], atol=1e-5, rtol=0)
    pipe.save_pretrained(tmp_path / "m")
    loaded = SuTIPipeline.from_pretrained(tmp_path / "m")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.suti_config.unet.pooled_text and loaded.unet.config.class_embed_type == "projection"
    assert np.array_equal(run(loaded, "a red circle", d3, seed=0), one)


def test_other_class_embeddings_are_refused_by_the_demo_encoder():
    from suti.errors import ConfigError
    from suti.models.demo_encoder import check_supported_unet

    pipe = tiny_pipe()
    pipe.unet.class_embedding = torch.nn.Embedding(4, 8)
    with pytest.raises(ConfigError, match="class embedding"):
        check_supported_unet(pipe.unet)


def test_a_recipe_can_add_pooled_text_to_the_model_it_starts_from():
    from suti.models.pooled_text import uses_pooled_text
    from suti.train.model import TrainModule, build_pipeline
    from suti.train.recipe import load_recipe

    recipe = dataclasses.replace(load_recipe("apprentice_tiny"), add_pooled_text=True)
    pipe = build_pipeline(recipe)
    assert uses_pooled_text(pipe.unet) and pipe.suti_config.unet.pooled_text
    module = TrainModule(pipe, recipe)
    assert any(n.startswith("unet.class_embedding.") for n in module.trainable())  # it trains with the base
    ids = torch.randint(4, 20, (2, pipe.tokenizer.model_max_length))
    x = torch.randn(2, 3, 16, 16)
    loss = module(target=x.clamp(-1, 1), text_ids=ids, noise=torch.randn_like(x), timesteps=torch.tensor([10, 900]))
    loss.backward()
    assert pipe.unet.class_embedding.linear_2.weight.grad.abs().sum() > 0
