"""SubjectLayers: every trainable SuTI parameter, installed on / removed from a base UNet.

    layers = install_subject_layers(unet, cfg)   # SubjectAttnProcessor on attn2 of the chosen blocks,
                                                 # TextOnlyProcessor (pass-through) on every other attn2
    ctx = layers.encode_demos(unet, demos, caption_embeds, ...)     # DemoContext, cached per request
    unet(x, t, encoder_hidden_states=(text, ctx))
    uninstall_subject_layers(unet, layers)      # the original processor objects are back, unchanged

Checkpoints hold only these weights, namespaced (`subject.attn.<attention path>.to_k_demo.weight`,
`subject.demo_encoder.*`), in `subject_layers.safetensors` beside the `config.json` that built them.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from suti.errors import ConfigError, InputError, ModelLoadError
from suti.models.config import SubjectConfig, subject_config_from_dict
from suti.models.demo_encoder import DemoEncoder, check_supported_unet, level_channels
from suti.models.subject_attn import DemoContext, SubjectAttnProcessor, TextOnlyProcessor

WEIGHTS_NAME = "subject_layers.safetensors"
CONFIG_NAME = "config.json"
PREFIX = "subject."


def cross_attention_layers(unet: nn.Module) -> dict[str, nn.Module]:
    """All cross-attention (attn2) modules of the UNet by dotted path, in module order."""
    from diffusers.models.attention_processor import Attention

    return {n: m for n, m in unet.named_modules() if isinstance(m, Attention) and m.is_cross_attention}


def _block_prefix(block: str) -> str:
    if block == "mid":
        return "mid_block."
    kind, idx = block.split(".")
    return f"{kind}_blocks.{idx}."


def resolve_attn_blocks(unet: nn.Module, blocks: tuple[str, ...] | None) -> tuple[str, ...]:
    """The blocks whose attn2 layers get demo attention. None = the lowest resolution with cross-attention:
    the lowest-resolution cross-attention down block, the mid block, and the up block(s) at that resolution."""
    has_ca = lambda b: getattr(b, "has_cross_attention", False)  # noqa: E731
    if blocks is None:
        down = [i for i, b in enumerate(unet.down_blocks) if has_ca(b)]
        if not down:
            raise ConfigError("unet: no cross-attention down block to attach subject layers to")
        lvl, n = max(down), len(unet.down_blocks)
        out = [f"down.{lvl}"] + (["mid"] if unet.mid_block is not None and has_ca(unet.mid_block) else [])
        out += [f"up.{j}" for j, b in enumerate(unet.up_blocks) if n - 1 - j == lvl and has_ca(b)]
        return tuple(out)
    for b in blocks:
        mod = unet.mid_block if b == "mid" else None
        if b != "mid":
            kind, idx = b.split(".")
            group = unet.down_blocks if kind == "down" else unet.up_blocks
            mod = group[int(idx)] if int(idx) < len(group) else None
        if mod is None or not has_ca(mod):
            raise ConfigError(f"subject.attn_blocks: {b!r} is not a cross-attention block of this UNet")
    return tuple(blocks)


class SubjectLayers(nn.Module):
    def __init__(self, unet: nn.Module, cfg: SubjectConfig):
        super().__init__()
        check_supported_unet(unet)
        cfg.validate("subject")
        self.config = cfg
        self.blocks = resolve_attn_blocks(unet, cfg.attn_blocks)
        prefixes = tuple(_block_prefix(b) for b in self.blocks)
        self.paths: list[str] = []  # dotted attention paths that carry demo attention
        self.attn = nn.ModuleDict()
        for path, attn in cross_attention_layers(unet).items():
            if path.startswith(prefixes):
                self.paths.append(path)
                self.attn[self._key(path)] = SubjectAttnProcessor(attn, positions=cfg.positions)
        dim = unet.config.cross_attention_dim
        self.demo_encoder = DemoEncoder(cfg, level_channels(unet, cfg.levels), dim)
        self._originals: dict[str, Any] = {}  # attention path -> the processor it had before `install`

    @staticmethod
    def _key(path: str) -> str:
        return path.replace(".", "__")

    def processor(self, path: str) -> SubjectAttnProcessor:
        return self.attn[self._key(path)]

    # -- install / uninstall --------------------------------------------------------------------------------
    @property
    def installed(self) -> bool:
        return bool(self._originals)

    def install(self, unet: nn.Module) -> "SubjectLayers":
        if self.installed:
            raise ConfigError("subject layers are already installed (uninstall them first)")
        layers = cross_attention_layers(unet)
        missing = [p for p in self.paths if p not in layers]
        if missing:
            raise ConfigError(f"subject layers do not fit this UNet: no attention layer {missing[0]!r}")
        for path, attn in layers.items():
            if isinstance(attn.processor, (SubjectAttnProcessor, TextOnlyProcessor)):
                raise ConfigError(f"{path} already carries subject layers (uninstall them first)")
        for path, attn in layers.items():
            original = attn.processor
            self._originals[path] = original
            if path in self.paths:
                proc = self.processor(path)
                proc.bind(original)
                attn.set_processor(proc)
            else:
                attn.set_processor(TextOnlyProcessor(original))
        return self

    def uninstall(self, unet: nn.Module) -> None:
        """Put back exactly the processor objects the UNet had before `install`."""
        layers = cross_attention_layers(unet)
        for path, original in self._originals.items():
            layers[path].set_processor(original)
        self._originals = {}

    @contextmanager
    def removed(self, unet: nn.Module) -> Iterator[None]:
        """Temporarily uninstalled (e.g. to save clean base UNet weights); reinstalled afterwards."""
        was = self.installed
        if was:
            self.uninstall(unet)
        try:
            yield
        finally:
            if was:
                self.install(unet)

    # -- use -------------------------------------------------------------------------------------------
    def encode_demos(self, unet: nn.Module, images: torch.Tensor, caption_embeds: torch.Tensor,
                     caption_mask: torch.Tensor | None = None, demo_mask: torch.Tensor | None = None,
                     timestep: int | float | torch.Tensor | None = None, mask_captions: bool = False) -> DemoContext:
        t = self.config.demo_timestep if timestep is None else timestep
        return self.demo_encoder(unet, images, caption_embeds, caption_mask, demo_mask, t, mask_captions)

    def gates(self) -> dict[str, float]:
        return {p: self.processor(p).gate.detach().item() for p in self.paths}

    @torch.no_grad()
    def set_gates(self, value: float) -> None:
        for p in self.paths:
            self.processor(p).gate.fill_(value)

    def set_pool_size(self, size: int | None) -> None:
        """Average-pool every demo feature level to size x size tokens (None: full maps). The weights act
        per token, so a trained model accepts any size; fewer tokens make demo attention cheaper, and
        the tokens' places follow the pooled grid. Saved with the config."""
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise InputError(f"demo pool size must be a positive integer or None, got {size!r}")
        self.config = replace(self.config, pool_size=size)  # a copy: presets may share the config object
        self.demo_encoder.pool_size = size

    # -- namespaced weights -----------------------------------------------------------------------------
    def subject_state_dict(self) -> dict[str, torch.Tensor]:
        sd = {}
        for p in self.paths:
            for k, v in self.processor(p).state_dict().items():
                sd[f"{PREFIX}attn.{p}.{k}"] = v.detach().clone().contiguous()
        for k, v in self.demo_encoder.state_dict().items():
            sd[f"{PREFIX}demo_encoder.{k}"] = v.detach().clone().contiguous()
        return sd

    def load_subject_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        expected = self.subject_state_dict()
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        if missing or unexpected:
            raise ModelLoadError(f"subject weights do not match the subject config: missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}")
        bad = [k for k in expected if tuple(sd[k].shape) != tuple(expected[k].shape)]
        if bad:
            raise ModelLoadError(f"subject weight {bad[0]!r} has shape {tuple(sd[bad[0]].shape)}, "
                                 f"expected {tuple(expected[bad[0]].shape)}")
        with torch.no_grad():
            for p in self.paths:
                head = f"{PREFIX}attn.{p}."
                self.processor(p).load_state_dict({k[len(head):]: v for k, v in sd.items() if k.startswith(head)})
            head = f"{PREFIX}demo_encoder."
            self.demo_encoder.load_state_dict({k[len(head):]: v for k, v in sd.items() if k.startswith(head)})

    def load_matching_state_dict(self, sd: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Copy every weight of `sd` whose name and shape match this layout (another SubjectConfig's
        layers, e.g. before a new level or block was added); the rest keep their fresh init (gates 0).
        Returns (copied names, fresh names)."""
        own = self.subject_state_dict()
        take = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        merged = {**own, **{k: v.to(own[k].dtype) for k, v in take.items()}}
        self.load_subject_state_dict(merged)
        return sorted(take), sorted(set(own) - set(take))

    def save(self, directory: str | Path, model_config: dict[str, Any] | None = None) -> None:
        """`config.json` = {"subject": this SubjectConfig, "model": the full model config if known}."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"subject": _jsonable(self.config), "model": model_config}
        (d / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        save_file(self.subject_state_dict(), str(d / WEIGHTS_NAME), metadata={"format": "pt", "suti": "subject/1"})

    @classmethod
    def load(cls, directory: str | Path, unet: nn.Module) -> "SubjectLayers":
        """Rebuild from `config.json` for `unet` and load the saved weights (not yet installed)."""
        d = Path(directory)
        if not (d / CONFIG_NAME).is_file() or not (d / WEIGHTS_NAME).is_file():
            raise ModelLoadError(f"no subject layers in {d.name!r}: expected {CONFIG_NAME} and {WEIGHTS_NAME}")
        try:
            data = json.loads((d / CONFIG_NAME).read_text())
            cfg = subject_config_from_dict(data["subject"])
        except (json.JSONDecodeError, KeyError, ConfigError) as e:
            raise ModelLoadError(f"invalid subject config in {d.name}/{CONFIG_NAME}: {e}") from None
        layers = cls(unet, cfg)
        layers.to(device=unet.device, dtype=unet.dtype)
        layers.load_subject_state_dict(load_file(str(d / WEIGHTS_NAME), device=str(unet.device)))
        return layers


def _jsonable(cfg: SubjectConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}


def install_subject_layers(unet: nn.Module, cfg: SubjectConfig | None = None, seed: int | None = 0) -> SubjectLayers:
    """Fresh (zero-gated) subject layers for `unet`, installed. Seeded init that leaves the global RNG alone."""
    cfg = cfg or SubjectConfig()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        layers = SubjectLayers(unet, cfg)
    layers.to(device=unet.device, dtype=unet.dtype)
    return layers.install(unet)


def uninstall_subject_layers(unet: nn.Module, layers: SubjectLayers) -> None:
    layers.uninstall(unet)
