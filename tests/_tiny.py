"""Tiny real components for the model/pipeline tests (imported by tests/test_models_*.py, test_pipeline_*.py)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import PIL.Image
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub from these tests

from configs import load_preset  # noqa: E402
from suti.models.config import SuTIConfig, VAEConfig  # noqa: E402

CAPTIONS = ["a red circle", "a red circle in the jungle", "a red circle on the beach", "red circle with a hat",
            "a small red circle", "a large red circle", "a red circle in snow", "red circle sketch"]


def tiny_config(**overrides) -> SuTIConfig:
    cfg = load_preset("tiny")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def tiny_latent_config() -> SuTIConfig:
    """Latent variant: 16 px images, a /2 VAE with 4 latent channels, UNet at 8x8."""
    cfg = load_preset("tiny")
    unet = dataclasses.replace(cfg.unet, sample_size=8, in_channels=4, out_channels=4)
    vae = VAEConfig(block_out_channels=(16, 32), latent_channels=4, layers_per_block=1, norm_num_groups=8)
    return dataclasses.replace(cfg, name="tiny-latent", unet=unet, vae=vae)


def tiny_pipe(cfg: SuTIConfig | None = None, gate: float | None = 0.7):
    """A tiny pipeline; `gate` sets every subject gate (None keeps the zero init)."""
    from suti.pipeline import SuTIPipeline

    pipe = SuTIPipeline.from_config(cfg or tiny_config())
    pipe.set_progress_bar_config(disable=True)
    if gate is not None:
        pipe.subject.set_gates(gate)
    return pipe


def demo_images(n: int, seed: int = 0, size: tuple[int, int] = (24, 20)) -> list[PIL.Image.Image]:
    """Random smooth RGB demo images (different sizes than the model's, to exercise resize + crop)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        out.append(PIL.Image.fromarray(small).resize((size[0] + i, size[1]), PIL.Image.BILINEAR))
    return out


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(pipe, prompt="a red circle on the beach", demos=None, steps=3, seed=0, **kw) -> np.ndarray:
    """A short seeded sampling run returning float images (B, H, W, 3)."""
    kw.setdefault("generator", gen(seed))
    return pipe(prompt, demos, num_inference_steps=steps, output_type="np", **kw).images
