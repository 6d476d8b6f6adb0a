"""SuTIPipeline: subject-driven text-to-image in one sampling pass, from 1-8 demos (ideally 3-5).

    pipe = SuTIPipeline.from_config("tiny")              # random base (tests); or .from_pretrained(dir),
    pipe = SuTIPipeline.from_base(sd_dir)                # a stock SD-1.x/2.x diffusers dir + fresh subject layers
    out = pipe("the subject on the beach", subject_images=[im1, im2, im3], subject_captions=[c1, c2, c3])
    out.images[0].save("out.png")

Any diffusers scheduler can be swapped in: `pipe.scheduler = X.from_config(pipe.scheduler.config)`.
Loading and saving live in `SuTILoadingMixin` (loading.py).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, PreTrainedTokenizerBase

from suti.errors import InputError
from suti.models.pooled_text import pooled_text
from suti.models.subject_attn import DemoContext
from suti.models.subject_layers import SubjectLayers
from suti.pipeline.guidance import GUIDANCE_MODES, combine, plan_passes, uses_demos
from suti.pipeline.loading import SuTILoadingMixin
from suti.pipeline.preprocess import normalize_request, prepare_demo_images
from suti.pipeline.retrieved import UsedNeighbors, retrieve_demos

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class SuTIPipelineOutput(BaseOutput):
    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor  # (B*num_images_per_prompt) images
    neighbors: list[UsedNeighbors] | None = None  # Re-Imagen mode: the catalog entries used, one per prompt


class SuTIPipeline(SuTILoadingMixin, DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["vae"]

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: PreTrainedTokenizerBase,
                 scheduler: SchedulerMixin, vae: AutoencoderKL | None = None):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler, vae=vae)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_normalize=True)
        self.subject: SubjectLayers | None = None  # trainable subject layers, installed on self.unet
        self.suti_config = None  # the SuTIConfig that built this model, when known

    @property
    def image_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def to(self, *args, **kwargs):
        super().to(*args, **kwargs)
        if self.subject is not None:  # the demo encoder is not a registered component
            self.subject.to(device=self.unet.device, dtype=self.unet.dtype)
        return self

    # -- encoders -----------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]):
        """Token ids (n, L) and attention mask, padded to the model's length and truncated to it."""
        return self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt")

    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text-encoder states (n, L, D) and the token mask (n, L), True = a real (non-padding) token."""
        tok = self.tokenize(texts)
        ids = tok.input_ids.to(self._execution_device)
        states = self.text_encoder(ids)[0].to(self.unet.dtype)  # (n, L, D)
        return states, tok.attention_mask.to(ids.device).bool()

    def prepare_demos(self, demo_sets: list[list[Any]], caption_sets: list[list[str]] | None,
                      names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Demo images -> UNet-space inputs (B, N, C, h, w), caption states (B, N, L, D) and masks; N = max count."""
        B, N, S = len(demo_sets), max(len(s) for s in demo_sets), self.image_size
        dev, dtype = self._execution_device, self.unet.dtype
        images = torch.zeros(B, N, 3, S, S)
        demo_mask = torch.zeros(B, N, dtype=torch.bool)
        captions = [""] * (B * N)
        for b, demos in enumerate(demo_sets):
            images[b, : len(demos)] = prepare_demo_images(demos, S, names[b] if names else f"subject_images[{b}]")
            demo_mask[b, : len(demos)] = True
            for j in range(len(demos)):
                captions[b * N + j] = caption_sets[b][j] if caption_sets is not None else ""
        images, demo_mask = images.to(dev, dtype), demo_mask.to(dev)
        if self.vae is not None:  # demos enter the UNet's down path as (deterministic) latents
            valid = demo_mask.flatten()
            lat = self.vae.encode(images.flatten(0, 1)[valid]).latent_dist.mode() * self.vae.config.scaling_factor
            full = lat.new_zeros(B * N, *lat.shape[1:])
            full[valid] = lat
            images = full.view(B, N, *lat.shape[1:])  # (B, N, C_lat, h, w)
        states, mask = self.encode_text(captions)  # (B*N, L, D), (B*N, L)
        return dict(images=images, caption_embeds=states.view(B, N, *states.shape[1:]),
                    caption_mask=mask.view(B, N, -1), demo_mask=demo_mask)

    @property
    def mask_padding(self) -> bool:
        """Whether the UNet's cross-attention skips text padding (the model's `text.mask_padding`)."""
        return bool(self.suti_config is not None and self.suti_config.text.mask_padding)

    def encode_demos(self, demos: dict[str, torch.Tensor], timestep: int | float | torch.Tensor) -> DemoContext:
        return self.subject.encode_demos(self.unet, demos["images"], demos["caption_embeds"], demos["caption_mask"],
                                         demos["demo_mask"], timestep=timestep, mask_captions=self.mask_padding)

    @torch.no_grad()
    def encode_subject(self, subject_images: Any, subject_captions: list[str] | None = None) -> DemoContext:
        """Demo tokens of ONE subject (batch 1), computed once and reusable in any number of calls
        through `pipe(prompt, subject_embeds=ctx)`; a server caches these per registered subject."""
        if self.subject is None:
            raise InputError("this pipeline has no subject layers, so it cannot encode a subject")
        timestep = self.subject.config.demo_timestep
        if timestep == "current":
            raise InputError("this model re-encodes demos at every step (demo_timestep='current'); "
                             "its demo tokens cannot be computed once and cached")
        _, demo_sets, caption_sets = normalize_request("", subject_images, subject_captions)
        return self.encode_demos(self.prepare_demos(demo_sets, caption_sets), timestep)  # (1, M, D)

    def _check_subject_embeds(self, subject_embeds: Any, n_prompts: int) -> DemoContext:
        """One DemoContext (n_prompts, M, D) from a context (batch 1 or n_prompts) or a list, one per prompt."""
        items = list(subject_embeds) if isinstance(subject_embeds, (list, tuple)) else [subject_embeds]
        for i, c in enumerate(items):
            if not isinstance(c, DemoContext):
                raise InputError(f"subject_embeds[{i}]: expected a DemoContext from pipe.encode_subject(...), "
                                 f"got {type(c).__name__}")
        dim = self.subject.demo_encoder.level_emb.shape[1]
        for i, c in enumerate(items):
            if c.tokens.shape[-1] != dim:
                raise InputError(f"subject_embeds[{i}]: token width {c.tokens.shape[-1]} does not match this "
                                 f"model's demo tokens ({dim}); were they encoded by another model?")
        if len(items) > 1 and (len(items) != n_prompts or any(c.batch_size != 1 for c in items)):
            raise InputError(f"subject_embeds: give one context (batch 1) per prompt; got {len(items)} for "
                             f"{n_prompts} prompts")
        ctx = DemoContext.cat_padded(items)
        if ctx.batch_size == 1 and n_prompts > 1:
            ctx = ctx.repeat_interleave(n_prompts)
        if ctx.batch_size != n_prompts:
            raise InputError(f"subject_embeds: batch {ctx.batch_size} does not match {n_prompts} prompts")
        dev = self._execution_device
        return ctx.to(dev, self.unet.dtype)

    # -- checks -------------------------------------------------------------------------------------------
    def check_inputs(self, num_inference_steps, guidance_scale, subject_guidance_scale, num_images_per_prompt,
                     guidance_mode, demo_timestep, output_type) -> None:
        steps = num_inference_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
            raise InputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        for name, v in (("guidance_scale", guidance_scale), ("subject_guidance_scale", subject_guidance_scale)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{name} must be a number, got {v!r}")
            if math.isnan(v) or math.isinf(v):
                raise InputError(f"{name} must be finite, got {v!r} (NaN or infinite)")
            if v < 0:
                raise InputError(f"{name} must be >= 0, got {v!r} (negative)")
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) \
                or num_images_per_prompt < 1:
            raise InputError(f"num_images_per_prompt must be an integer >= 1, got {num_images_per_prompt!r}")
        if guidance_mode not in GUIDANCE_MODES:
            raise InputError(f"guidance_mode must be one of {GUIDANCE_MODES}, got {guidance_mode!r}")
        n_train = self.scheduler.config.num_train_timesteps
        if demo_timestep != "current" and (isinstance(demo_timestep, bool) or not isinstance(demo_timestep, int)
                                           or not 0 <= demo_timestep < n_train):
            raise InputError(f"demo_timestep must be 'current' or an integer in [0, {n_train}), got {demo_timestep!r}")
        if output_type not in OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")

    def _generators(self, generator, n_prompts: int, n_images: int):
        if generator is None or isinstance(generator, torch.Generator):
            return generator
        if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
            raise InputError("generator must be a torch.Generator or a list of them")
        if len(generator) == n_prompts * n_images:
            return list(generator)
        if len(generator) == n_prompts:  # one generator per prompt, drawn once per image of that prompt
            return [g for g in generator for _ in range(n_images)]
        raise InputError(f"generator list has {len(generator)} entries; expected one per prompt ({n_prompts}) "
                         f"or one per image ({n_prompts * n_images})")

    def _step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        params = set(inspect.signature(self.scheduler.step).parameters)
        kw: dict[str, Any] = {}
        if "eta" in params:
            kw["eta"] = eta
        if "generator" in params:
            kw["generator"] = generator
        return kw

    # -- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        subject_images: Any = None,
        subject_captions: list[str] | list[list[str]] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        subject_guidance_scale: float = 2.0,
        guidance_mode: str = "dual",
        demo_timestep: int | str | None = None,
        reencode_demos: bool = False,
        subject_embeds: DemoContext | list[DemoContext] | None = None,
        retriever: Any = None,
        retrieval_k: int = 4,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> SuTIPipelineOutput | tuple:
        r"""
        Args:
            prompt: one prompt, or a list (then `subject_images` is a list of demo lists, one per prompt).
            subject_images: 1-8 demo images per prompt (PIL / numpy HWC / torch CHW, any size and mode);
                None = plain text-to-image (the base model).
            subject_captions: one caption per demo (same nesting as `subject_images`); None = empty captions.
            guidance_scale, subject_guidance_scale: s_text and s_subj of the guidance (see guidance.py).
            guidance_mode: "dual" (three passes in one UNet call) or "interleaved" (Re-Imagen style).
            demo_timestep: timestep at which demos run through the UNet's down path; default the model's
                (0). "current" re-encodes demos at every step at that step's timestep (an ablation).
            reencode_demos: re-encode the demos at every step even at a fixed timestep (benchmark/test of
                the cache; gives the same images as encoding once).
            subject_embeds: demo tokens from `encode_subject` (one per prompt, or one for all) instead
                of `subject_images`: demo encoding is skipped entirely.
            retriever: Re-Imagen mode, instead of `subject_images`: an object with
                `.search(texts, k, same_cluster=True)` (e.g. `retrieval.NeighborRetriever`); each prompt's
                demos are the `retrieval_k` best members of its best-matching cluster, recorded in
                `output.neighbors`.
            generator: a generator, or a list with one per prompt or one per image.
        """
        # 1. check inputs
        if demo_timestep is None:
            demo_timestep = self.subject.config.demo_timestep if self.subject is not None else 0
        self.check_inputs(num_inference_steps, guidance_scale, subject_guidance_scale, num_images_per_prompt,
                          guidance_mode, demo_timestep, output_type)
        given = [n for n, v in (("subject_images", subject_images), ("subject_embeds", subject_embeds),
                                ("retriever", retriever)) if v is not None]
        if len(given) > 1:
            raise InputError(f"give only one demo source, got {' and '.join(given)}")
        if given and self.subject is None:
            raise InputError(f"{given[0]} given, but this pipeline has no subject layers")
        used = None
        if retriever is not None:  # Re-Imagen: demos are a catalog cluster's members
            if subject_captions is not None:
                raise InputError("subject_captions: given with a retriever (retrieved demos bring their own captions)")
            prompts = normalize_request(prompt, None, None)[0]
            subject_images, subject_captions, used = retrieve_demos(retriever, prompts, retrieval_k)
            if isinstance(prompt, str):
                subject_images, subject_captions = subject_images[0], subject_captions[0]
        prompts, demo_sets, caption_sets = normalize_request(prompt, subject_images, subject_captions)
        cached = None
        if subject_embeds is not None:
            if demo_timestep == "current" or reencode_demos:
                raise InputError("subject_embeds are fixed demo tokens; they cannot be re-encoded at every step")
            cached = self._check_subject_embeds(subject_embeds, len(prompts))
        n_img = num_images_per_prompt
        batch = len(prompts) * n_img
        generator = self._generators(generator, len(prompts), n_img)
        device = self._execution_device

        # 2. encode prompt (and the empty prompt for guidance)
        cond, cond_mask = self.encode_text(prompts)  # (P, L, D), (P, L)
        cond = cond.repeat_interleave(n_img, dim=0)  # (B, L, D)
        uncond, uncond_mask = self.encode_text([""])
        uncond = uncond.expand_as(cond)  # (B, L, D)
        cond_mask = cond_mask.repeat_interleave(n_img, dim=0)  # (B, L) True = a real token
        uncond_mask = uncond_mask.expand(cond.shape[:2])  # (B, L)
        cond_pool = pooled_text(self.unet, cond, cond_mask)  # (B, D) or None
        uncond_pool = pooled_text(self.unet, uncond, uncond_mask)  # (B, D) or None

        # 3. encode demos ONCE (cached for every step) unless re-encoding per step was asked for
        demos, ctx = None, None
        per_step = demo_sets is not None and (demo_timestep == "current" or reencode_demos)
        if cached is not None:
            ctx = cached.repeat_interleave(n_img)  # (B, M, D) given by the caller: no encoding at all
        if demo_sets is not None:
            names = (["subject_images"] if isinstance(prompt, str)
                     else [f"subject_images[{i}]" for i in range(len(demo_sets))])
            demos = self.prepare_demos(demo_sets, caption_sets, names)
            if not per_step:
                ctx = self.encode_demos(demos, demo_timestep).repeat_interleave(n_img)  # (B, M, D)

        # 4. timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 5. latents
        c, s = self.unet.config.in_channels, int(self.unet.config.sample_size)
        latents = randn_tensor((batch, c, s, s), generator=generator, device=device, dtype=self.unet.dtype)
        latents = latents * self.scheduler.init_noise_sigma  # (B, C, s, s)
        step_kwargs = self._step_kwargs(generator, eta)

        # 6. denoise (the subject layers keep the demo keys/values of fixed demo tokens across steps)
        kv_cache: dict = {}
        for i, t in enumerate(self.progress_bar(timesteps)):
            passes = plan_passes(guidance_mode, i, guidance_scale, subject_guidance_scale, ctx is not None or per_step)
            x_in = self.scheduler.scale_model_input(torch.cat([latents] * len(passes)), t)  # (P*B, C, s, s)
            text_in = torch.cat([cond if p.text else uncond for p in passes])  # (P*B, L, D)
            states: Any = text_in
            if uses_demos(passes):
                if per_step:
                    t_demo = t if demo_timestep == "current" else demo_timestep
                    ctx = self.encode_demos(demos, t_demo).repeat_interleave(n_img)  # (B, M, D)
                demo_in = DemoContext.cat([ctx.with_weight(1.0 if p.demo else 0.0) for p in passes])  # (P*B, M, D)
                if not per_step:
                    demo_in = demo_in.cached(kv_cache)
                states = (text_in, demo_in)
            labels = None if cond_pool is None else torch.cat([cond_pool if p.text else uncond_pool for p in passes])
            keep = torch.cat([cond_mask if p.text else uncond_mask for p in passes]) if self.mask_padding else None
            pred = self.unet(x_in, t, encoder_hidden_states=states, class_labels=labels,
                             encoder_attention_mask=keep).sample  # (P*B, C, s, s)
            pred = combine(pred, passes)  # (B, C, s, s)
            latents = self.scheduler.step(pred, t, latents, **step_kwargs).prev_sample

        # 7. decode
        if self.vae is not None and output_type != "latent":
            image = self.vae.decode(latents / self.vae.config.scaling_factor).sample  # (B, 3, H, W)
        else:
            image = latents
        image = self.image_processor.postprocess(image, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return SuTIPipelineOutput(images=image, neighbors=used)
