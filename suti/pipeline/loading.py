"""Building, loading and saving `SuTIPipeline`s (a mixin, so pipeline_suti.py stays about sampling).

Saved layout (`save_pretrained(dir)`):
    dir/model_index.json, unet/, text_encoder/, tokenizer/, scheduler/, [vae/]   stock diffusers layout;
                                                     unet/ holds the CLEAN base weights (subject layers removed)
    dir/subject/subject_layers.safetensors            only the trainable subject weights, namespaced
    dir/subject/config.json                           {"subject": SubjectConfig, "model": SuTIConfig or null}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from suti.errors import ModelLoadError
from suti.models.config import SubjectConfig, SuTIConfig
from suti.models.subject_layers import CONFIG_NAME, SubjectLayers, install_subject_layers

SUBJECT_DIR = "subject"
BASE_FOLDERS = ("unet", "text_encoder", "tokenizer", "scheduler")


class SuTILoadingMixin:
    """from_config / from_base / from_pretrained / save_pretrained for SuTIPipeline."""

    def attach_subject(self, layers: SubjectLayers) -> None:
        """Use `layers` (installed on self.unet if they are not yet) as this pipeline's subject layers."""
        if self.subject is not None and self.subject is not layers:
            self.subject.uninstall(self.unet)
        layers.to(device=self.unet.device, dtype=self.unet.dtype)
        if not layers.installed:
            layers.install(self.unet)
        self.subject = layers

    def detach_subject(self) -> SubjectLayers | None:
        """Remove the subject layers (the UNet gets its original processors back) and return them."""
        layers, self.subject = self.subject, None
        if layers is not None:
            layers.uninstall(self.unet)
        return layers

    @classmethod
    def from_config(cls, config: SuTIConfig | str | Path) -> Any:
        """A randomly initialised (seeded) model from a config or a preset name (`tiny`, `world`)."""
        from configs import load_preset
        from suti.models.base import build_base

        cfg = config if isinstance(config, SuTIConfig) else load_preset(config)
        base = build_base(cfg)
        pipe = cls(unet=base.unet, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                   scheduler=base.scheduler, vae=base.vae)
        pipe.suti_config = cfg
        pipe.attach_subject(install_subject_layers(base.unet, cfg.subject, seed=cfg.seed + 1))
        return pipe

    @classmethod
    def from_base(cls, base_dir: str | Path, subject_config: SubjectConfig | None = None, seed: int = 0,
                  torch_dtype: Any = None) -> Any:
        """A stock SD-1.x/2.x diffusers directory (unet/, text_encoder/, tokenizer/, scheduler/, [vae/])
        + fresh zero-gated subject layers, in float32 unless `torch_dtype` says otherwise. The scheduler is
        converted to DDIM (swap it freely)."""
        import torch
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        d = Path(base_dir)
        missing = [f for f in BASE_FOLDERS if not (d / f).is_dir()]
        if missing:
            raise ModelLoadError(f"{str(base_dir)!r} is not a diffusers model directory: missing {missing}")
        kw = {"dtype": torch_dtype or torch.float32}  # both libraries' keyword; fp16 files stay fp16 otherwise
        try:
            unet = UNet2DConditionModel.from_pretrained(d / "unet", local_files_only=True, **kw)
            text_encoder = CLIPTextModel.from_pretrained(d / "text_encoder", local_files_only=True, **kw)
            tokenizer = AutoTokenizer.from_pretrained(d / "tokenizer", local_files_only=True)
            scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(d / "scheduler", local_files_only=True))
            vae = (AutoencoderKL.from_pretrained(d / "vae", local_files_only=True, **kw)
                   if (d / "vae").is_dir() else None)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ModelLoadError(f"cannot load the base model from {str(base_dir)!r}: {e}") from None
        if text_encoder.config.hidden_size != unet.config.cross_attention_dim:
            raise ModelLoadError(f"text encoder width {text_encoder.config.hidden_size} != UNet cross-attention "
                                 f"width {unet.config.cross_attention_dim}")
        pipe = cls(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler, vae=vae)
        pipe.attach_subject(install_subject_layers(unet, subject_config or SubjectConfig(), seed=seed))
        return pipe

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> Any:
        """A directory written by `save_pretrained`: base components + `subject/` layers. Local only.
        Every component loads in float32 unless `dtype` says otherwise (the files may be fp16)."""
        import torch

        d = Path(pretrained_model_name_or_path)
        if not (d / "model_index.json").is_file():
            raise ModelLoadError(f"{str(pretrained_model_name_or_path)!r} has no model_index.json "
                                 "(not a saved SuTI pipeline; for a stock SD directory use from_base)")
        if not (d / SUBJECT_DIR / CONFIG_NAME).is_file():
            raise ModelLoadError(f"{str(pretrained_model_name_or_path)!r} has no {SUBJECT_DIR}/{CONFIG_NAME} "
                                 "(for a stock SD directory use from_base)")
        kwargs.setdefault("local_files_only", True)
        # float32 by default: transformers would otherwise keep fp16 files in fp16
        kwargs["dtype"] = kwargs.pop("torch_dtype", None) or kwargs.get("dtype") or torch.float32
        try:
            pipe = super().from_pretrained(str(d), **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise ModelLoadError(f"cannot load the pipeline from {str(pretrained_model_name_or_path)!r}: {e}") from None
        pipe.attach_subject(SubjectLayers.load(d / SUBJECT_DIR, pipe.unet))
        model = json.loads((d / SUBJECT_DIR / CONFIG_NAME).read_text()).get("model")
        if model is not None:
            try:
                pipe.suti_config = SuTIConfig.from_dict(model)
            except Exception as e:  # the weights loaded fine, but the config also sets text.mask_padding
                raise ModelLoadError(f"invalid model config in {SUBJECT_DIR}/{CONFIG_NAME}: {e}") from None
        return pipe

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """Base components with clean UNet weights (subject layers temporarily removed) + `subject/`."""
        if self.subject is None:
            super().save_pretrained(str(save_directory), **kwargs)
            return
        with self.subject.removed(self.unet):
            super().save_pretrained(str(save_directory), **kwargs)
        model = self.suti_config.to_dict() if self.suti_config is not None else None
        self.subject.save(Path(save_directory) / SUBJECT_DIR, model_config=model)
