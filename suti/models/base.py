"""The base text-to-image stack, built from a `SuTIConfig` with stock diffusers / transformers classes.

UNet2DConditionModel (+ optional AutoencoderKL), CLIPTextModel, the word-level tokenizer and a DDIM
scheduler. Initialisation is seeded and does not disturb the caller's global RNG state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerBase

from suti.errors import ConfigError
from suti.models.config import SchedulerConfig, SuTIConfig, TextConfig, UNetConfig, VAEConfig
from suti.models.tokenizer import BOS, EOS, PAD, build_word_tokenizer, world_vocabulary


@dataclass
class BaseStack:
    """The frozen-or-trainable base model parts (everything except the subject layers)."""

    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: PreTrainedTokenizerBase
    scheduler: DDIMScheduler
    vae: AutoencoderKL | None = None


def build_unet(cfg: UNetConfig) -> UNet2DConditionModel:
    return UNet2DConditionModel(**cfg.diffusers_kwargs())


def build_vae(cfg: VAEConfig, image_size: int) -> AutoencoderKL:
    return AutoencoderKL(**cfg.diffusers_kwargs(image_size))


def build_tokenizer(cfg: TextConfig) -> PreTrainedTokenizerBase:
    if cfg.tokenizer != "word":
        raise ConfigError(f"text.tokenizer: {cfg.tokenizer!r} tokenizers are loaded from a model directory, not built")
    words = world_vocabulary() if cfg.vocab == "world" else list(cfg.vocab)
    return build_word_tokenizer(words, cfg.max_length)


def build_text_encoder(cfg: TextConfig, tokenizer: PreTrainedTokenizerBase) -> CLIPTextModel:
    text_cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_length,
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
    )
    return CLIPTextModel(text_cfg)


def scheduler_kwargs(cfg: SchedulerConfig) -> dict[str, Any]:
    return dict(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        prediction_type=cfg.prediction_type,
        timestep_spacing=cfg.timestep_spacing,
        clip_sample=cfg.clip_sample,
        rescale_betas_zero_snr=cfg.rescale_betas_zero_snr,
        set_alpha_to_one=True,  # the last DDIM step lands on the clean image
        steps_offset=0,
    )


def build_scheduler(cfg: SchedulerConfig) -> DDIMScheduler:
    return DDIMScheduler(**scheduler_kwargs(cfg))


def build_base(cfg: SuTIConfig) -> BaseStack:
    """Randomly initialised base stack for `init="random"` presets (tiny, world); seeded by `cfg.seed`."""
    if cfg.init != "random":
        raise ConfigError(
            f"init: preset {cfg.name!r} describes pretrained weights; load it with "
            "SuTIPipeline.from_base(<local diffusers directory>) instead of building it randomly"
        )
    tokenizer = build_tokenizer(cfg.text)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        unet = build_unet(cfg.unet)
        text_encoder = build_text_encoder(cfg.text, tokenizer)
        vae = build_vae(cfg.vae, cfg.image_size) if cfg.vae is not None else None
    for m in (unet, text_encoder, vae):
        if m is not None:
            m.eval()
    return BaseStack(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                     scheduler=build_scheduler(cfg.scheduler), vae=vae)
