"""The trained model as ONE nn.Module whose forward is the diffusion loss (so DDP / accelerate wrap it).

    pipe = build_pipeline(recipe)                   # random init from a preset, or a trained pipeline dir
    module = TrainModule(pipe, recipe)              # picks what trains: base / dreambooth / apprentice
    loss = module(target=..., text_ids=..., noise=..., timesteps=..., [demos=..., ...])

Parameter names are stable (`subject.*` first, then `unet.*`, `text_encoder.*`): checkpoints store the
trainable ones by these names. The subject processors are also registered inside the UNet's attention
layers; PyTorch de-duplicates shared parameters, so each appears once, under `subject.`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from suti.errors import ModelLoadError
from suti.models.pooled_text import add_pooled_text, pooled_text
from suti.models.subject_attn import DemoContext
from suti.train.recipe import TrainRecipe


def resolve_init(path: str) -> Path:
    """A pipeline directory, or a training run directory holding one in `model/`."""
    p = Path(path)
    if (p / "model" / "model_index.json").is_file():
        return p / "model"
    if (p / "model_index.json").is_file():
        return p
    raise ModelLoadError(f"init_from: {path!r} is neither a saved pipeline nor a training run with model/")


def model_config(name: str):
    """A preset name (configs/), a model name in configs/train/models/, or a SuTIConfig JSON path."""
    from configs import load_preset, preset_names
    from suti.train.recipe import recipe_dir

    local = recipe_dir() / "models" / f"{name}.json"
    return load_preset(local if name not in preset_names() and local.is_file() else name)


def build_pipeline(recipe: TrainRecipe):
    """The pipeline a recipe starts from, in float32 with progress bars off."""
    from suti.pipeline import SuTIPipeline

    if recipe.init_from:
        pipe = SuTIPipeline.from_pretrained(resolve_init(recipe.init_from))
        if pipe.suti_config is None:
            raise ModelLoadError(f"init_from: {recipe.init_from!r} does not record the config that built it")
    else:
        pipe = SuTIPipeline.from_config(model_config(recipe.model))
    if recipe.add_pooled_text and add_pooled_text(pipe.unet):  # zero-initialised: the start model is unchanged
        pipe.suti_config.unet.pooled_text = True
    if recipe.subject_overrides is not None and pipe.subject is not None:
        reshape_subject_layers(pipe, recipe.subject_overrides.changes(), seed=recipe.loop.seed)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reshape_subject_layers(pipe, changes: dict, seed: int = 0) -> tuple[list[str], list[str]]:
    """Replace the pipeline's subject layers by a new layout (SubjectConfig fields in `changes`),
    carrying over every weight that still fits; returns (copied names, fresh names)."""
    from dataclasses import replace

    from suti.models.subject_layers import install_subject_layers

    old = pipe.detach_subject()
    cfg = replace(old.config, **changes)
    layers = install_subject_layers(pipe.unet, cfg, seed=seed)
    copied, fresh = layers.load_matching_state_dict(old.subject_state_dict())
    pipe.attach_subject(layers)
    if pipe.suti_config is not None:
        pipe.suti_config.subject = cfg
    return copied, fresh


class TrainModule(nn.Module):
    def __init__(self, pipe, recipe: TrainRecipe):
        super().__init__()
        self.subject = pipe.subject  # registered first: shared processor weights are named subject.*
        self.unet = pipe.unet
        self.text_encoder = pipe.text_encoder
        self.vae = pipe.vae
        self.scheduler = pipe.scheduler
        self.pad_id = pipe.tokenizer.pad_token_id
        self.mask_padding = pipe.mask_padding  # cross-attention skips text padding (TextConfig.mask_padding)
        self.prediction_type = pipe.scheduler.config.prediction_type
        self.register_buffer("alphas_cumprod", pipe.scheduler.alphas_cumprod.clone().float(), persistent=False)
        self.set_trainable(recipe)

    def set_trainable(self, recipe: TrainRecipe) -> None:
        self.requires_grad_(False)
        subject = list(self.subject.parameters())
        if recipe.kind == "base":
            self.unet.requires_grad_(True)
            self.text_encoder.requires_grad_(True)
        elif recipe.kind == "dreambooth":
            self.unet.requires_grad_(True)
            self.text_encoder.requires_grad_(recipe.dreambooth.train_text_encoder)
        elif recipe.apprentice.train_base:
            self.unet.requires_grad_(True)
            self.text_encoder.requires_grad_(True)
        for p in subject:
            p.requires_grad_(recipe.kind == "apprentice")
        if recipe.add_pooled_text and getattr(self.unet, "class_embedding", None) is not None:
            self.unet.class_embedding.requires_grad_(True)  # a layer the recipe adds always trains
        self.train()
        if self.vae is not None:
            self.vae.eval()

    def trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def subject_names(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.startswith("subject.")}

    # -- pieces --------------------------------------------------------------------------------------------
    def to_model_space(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) pixels in [-1, 1] -> UNet input space (latents when the model has a VAE)."""
        if self.vae is None:
            return images
        with torch.no_grad():
            return self.vae.encode(images).latent_dist.mode() * self.vae.config.scaling_factor

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(ids)[0]  # (n, L, D)

    def demo_context(self, demos: torch.Tensor, demo_ids: torch.Tensor, demo_mask: torch.Tensor,
                     demo_weight: torch.Tensor) -> DemoContext:
        B, N = demos.shape[:2]
        x = self.to_model_space(demos.flatten(0, 1))  # (B*N, C, s, s)
        x = x.view(B, N, *x.shape[1:])  # (B, N, C, s, s)
        caps = self.encode_text(demo_ids.flatten(0, 1))  # (B*N, L, D)
        caps = caps.view(B, N, *caps.shape[1:])  # (B, N, L, D)
        # rows whose demos are dropped (weight 0) add nothing to the output and get no gradient, so their
        # demos are not run through the UNet at all (the same loss, ~20 % less demo encoding); a batch with
        # every row dropped keeps its mask, since the UNet's attention cannot take an empty batch
        used = demo_mask.bool() & (demo_weight != 0)[:, None]  # (B, N)
        ctx = self.subject.encode_demos(self.unet, x, caps, demo_ids != self.pad_id,
                                        used if bool(used.any()) else demo_mask, mask_captions=self.mask_padding)
        return ctx.with_weight(demo_weight)  # (B, N*T, D)

    def denoise(self, x_t: torch.Tensor, timesteps: torch.Tensor, text_ids: torch.Tensor,
                demos: DemoContext | None = None) -> torch.Tensor:
        text = self.encode_text(text_ids)  # (B, L, D)
        states = text if demos is None else (text, demos)
        real = text_ids != self.pad_id  # (B, L) True = a real token
        labels = pooled_text(self.unet, text, real)  # (B, D), or None
        keep = real if self.mask_padding else None
        return self.unet(x_t, timesteps, encoder_hidden_states=states, class_labels=labels,
                         encoder_attention_mask=keep).sample  # (B, C, s, s)

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise  # (B, C, s, s)

    def regression_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return a.sqrt() * noise - (1 - a).sqrt() * x0  # v

    def predicted_x0(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        if self.prediction_type == "epsilon":
            return (x_t - (1 - a).sqrt() * pred) / a.sqrt().clamp_min(1e-4)
        if self.prediction_type == "sample":
            return pred
        return a.sqrt() * x_t - (1 - a).sqrt() * pred

    # -- the loss ------------------------------------------------------------------------------------------
    def forward(self, target: torch.Tensor, text_ids: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                demos: torch.Tensor | None = None, demo_ids: torch.Tensor | None = None,
                demo_mask: torch.Tensor | None = None, demo_weight: torch.Tensor | None = None,
                target_weight: torch.Tensor | None = None) -> torch.Tensor:
        x0 = self.to_model_space(target)  # (B, C, s, s)
        x_t = self.noisy(x0, noise, timesteps)
        ctx = None if demos is None else self.demo_context(demos, demo_ids, demo_mask, demo_weight)
        pred = self.denoise(x_t, timesteps, text_ids, ctx)
        err = (pred.float() - self.regression_target(x0, noise, timesteps).float()) ** 2  # (B, C, s, s)
        if target_weight is None:
            return err.mean()
        w = target_weight.float()  # (B, 1, S, S) pixel weights
        if w.shape[-2:] != err.shape[-2:]:  # latent models: the weight map at the latent resolution
            w = F.adaptive_avg_pool2d(w, err.shape[-2:])  # (B, 1, s, s)
        return (err * w).sum() / (w.sum() * err.shape[1])  # weighted mean (plain mean when w = 1)


def sample_timesteps(n: int, recipe: TrainRecipe, num_train: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform t, except a `high_noise_fraction` share drawn uniformly from [high_noise_from, T)."""
    cfg = recipe.noise
    low = torch.randint(0, num_train, (n,), generator=generator)
    high = torch.randint(min(cfg.high_noise_from, num_train - 1), num_train, (n,), generator=generator)
    pick = torch.rand(n, generator=generator) < cfg.high_noise_fraction
    return torch.where(pick, high, low)  # (n,)
