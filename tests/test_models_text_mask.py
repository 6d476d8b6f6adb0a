"""`text.mask_padding`: the UNet's cross-attention (main path and demo encoder) reads only real text tokens."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from _tiny import demo_images, run, tiny_config, tiny_pipe
from suti.models.config import SuTIConfig


def masked_config(mask: bool = True) -> SuTIConfig:
    cfg = tiny_config()
    return dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, mask_padding=mask))


def noisy_padding(encoder, pad_id: int, scale: float = 3.0) -> None:
    """Make the text encoder's states at padding positions random (what a masked UNet must not see)."""
    forward = encoder.forward

    def patched(input_ids, *args, **kwargs):
        out = forward(input_ids, *args, **kwargs)
        states = out[0]
        noise = torch.randn(states.shape, generator=torch.Generator().manual_seed(7)) * scale  # (n, L, D)
        out[0].copy_(torch.where((input_ids == pad_id)[..., None], states + noise.to(states.dtype), states))
        return out

    encoder.forward = patched


@pytest.mark.parametrize("mask", [True, False])
def test_pipeline_ignores_padding_states_only_when_masked(mask):
    pipe = tiny_pipe(masked_config(mask))
    assert pipe.mask_padding is mask
    demos, captions = demo_images(3), ["a red circle", "a red circle in the jungle", "red circle"]
    clean = run(pipe, "a red circle", demos, subject_captions=captions)
    noisy_padding(pipe.text_encoder, pipe.tokenizer.pad_token_id)
    noisy = run(pipe, "a red circle", demos, subject_captions=captions)
    if mask:  # prompt, empty prompt and demo captions all skip their padding
        np.testing.assert_allclose(noisy, clean, atol=1e-5)
    else:
        assert np.abs(noisy - clean).max() > 1e-3


def test_masking_changes_the_model_and_survives_save_load(tmp_path):
    from suti.pipeline import SuTIPipeline

    masked, plain = tiny_pipe(masked_config(True)), tiny_pipe(masked_config(False))  # same seeded weights
    demos = demo_images(2)
    out = run(masked, "a red circle on the beach", demos)
    assert np.abs(out - run(plain, "a red circle on the beach", demos)).max() > 1e-3
    masked.save_pretrained(tmp_path / "m")
    loaded = SuTIPipeline.from_pretrained(tmp_path / "m")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.mask_padding
    np.testing.assert_allclose(run(loaded, "a red circle on the beach", demos), out, atol=1e-6)


def test_training_loss_ignores_padding_states_when_masked():
    from suti.train.recipe import load_recipe
    from suti.train.model import TrainModule

    pipe = tiny_pipe(masked_config(True))
    module = TrainModule(pipe, load_recipe("apprentice_tiny")).eval()
    g = torch.Generator().manual_seed(0)
    s = pipe.image_size
    ids = pipe.tokenize(["a red circle", "a small red circle in snow"]).input_ids  # (2, L)
    demo_ids = pipe.tokenize(["a red circle"] * 4).input_ids.view(2, 2, -1)  # (2, 2, L)
    batch = dict(target=torch.rand(2, 3, s, s, generator=g) * 2 - 1, text_ids=ids,
                 noise=torch.randn(2, 3, s, s, generator=g), timesteps=torch.tensor([850, 300]),
                 demos=torch.rand(2, 2, 3, s, s, generator=g) * 2 - 1, demo_ids=demo_ids,
                 demo_mask=torch.ones(2, 2, dtype=torch.bool), demo_weight=torch.ones(2))
    with torch.no_grad():
        clean = module(**batch)
        noisy_padding(pipe.text_encoder, pipe.tokenizer.pad_token_id)
        assert torch.allclose(module(**batch), clean, atol=1e-6)
