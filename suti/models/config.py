"""Typed configuration for the SuTI stack: base text-to-image model + subject layers.

One `SuTIConfig` describes everything needed to build a model from scratch (`tiny`, `world`) or to
describe a pretrained layout (`sd15`, loaded from a local diffusers directory). Configs round-trip
through JSON (`to_json` / `from_json`); every invalid value raises `ConfigError` naming its field,
e.g. ``unet.block_out_channels: ...``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from suti.errors import ConfigError

UNET_DOWN_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UNET_UP_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
UNET_MID_TYPES = ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
TOKENIZER_KINDS = ("word", "pretrained")
INIT_KINDS = ("random", "pretrained")
MAX_DEMOS = 8


def _fail(name: str, msg: str, value: Any) -> ConfigError:
    return ConfigError(f"{name}: {msg}, got {value!r}")


def _check_positive(name: str, value: int) -> None:
    if value <= 0:
        raise _fail(name, "must be > 0", value)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(name, f"must be one of {list(choices)}", value)


@dataclass
class UNetConfig:
    """Arguments of diffusers' `UNet2DConditionModel` that a preset may set (the rest keep defaults)."""

    sample_size: int = 32  # spatial size the UNet runs at (pixels, or latents when a VAE is used)
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (32, 64)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    layers_per_block: int = 1
    cross_attention_dim: int = 32
    attention_head_dim: int = 4  # diffusers' (historical) meaning: number of heads per attention layer
    norm_num_groups: int = 16
    # Imagen-style pooled text conditioning: the mean of the prompt's token states, projected, is added
    # to the timestep embedding (diffusers' class_embed_type="projection"; see models/pooled_text.py).
    pooled_text: bool = False

    def validate(self, name: str = "unet") -> None:
        for f in ("sample_size", "in_channels", "out_channels", "layers_per_block", "cross_attention_dim",
                  "attention_head_dim", "norm_num_groups"):
            _check_positive(f"{name}.{f}", getattr(self, f))
        n = len(self.block_out_channels)
        if n == 0 or any(c <= 0 for c in self.block_out_channels):
            raise _fail(f"{name}.block_out_channels", "must be a non-empty list of positive ints",
                        self.block_out_channels)
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise _fail(f"{name}.norm_num_groups",
                            f"must divide every block channel count {self.block_out_channels}", self.norm_num_groups)
            if c % self.attention_head_dim:
                raise _fail(f"{name}.attention_head_dim", "(heads) must divide every block channel count",
                            self.attention_head_dim)
        for f, allowed in (("down_block_types", UNET_DOWN_TYPES), ("up_block_types", UNET_UP_TYPES)):
            types_ = getattr(self, f)
            if len(types_) != n:
                raise _fail(f"{name}.{f}", f"needs one entry per block_out_channels entry ({n})", types_)
            for t in types_:
                _check_choice(f"{name}.{f}", t, allowed)
        _check_choice(f"{name}.mid_block_type", self.mid_block_type, UNET_MID_TYPES)
        if self.sample_size % 2 ** (n - 1):
            raise _fail(f"{name}.sample_size", f"must be divisible by 2**{n - 1} (number of downsamplings)",
                        self.sample_size)

    def diffusers_kwargs(self) -> dict[str, Any]:
        kw = dataclasses.asdict(self)
        if kw.pop("pooled_text"):
            kw.update(class_embed_type="projection", projection_class_embeddings_input_dim=self.cross_attention_dim)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}


@dataclass
class VAEConfig:
    """Arguments of diffusers' `AutoencoderKL` (optional: without it the UNet runs in pixel space)."""

    block_out_channels: tuple[int, ...] = (32, 64)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 16
    scaling_factor: float = 0.18215

    def validate(self, name: str = "vae") -> None:
        if not self.block_out_channels or any(c <= 0 for c in self.block_out_channels):
            raise _fail(f"{name}.block_out_channels", "must be a non-empty list of positive ints",
                        self.block_out_channels)
        for f in ("latent_channels", "layers_per_block", "norm_num_groups"):
            _check_positive(f"{name}.{f}", getattr(self, f))
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise _fail(f"{name}.norm_num_groups", "must divide every block channel count", self.norm_num_groups)
        if not self.scaling_factor > 0:
            raise _fail(f"{name}.scaling_factor", "must be > 0", self.scaling_factor)

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def diffusers_kwargs(self, image_size: int) -> dict[str, Any]:
        n = len(self.block_out_channels)
        return dict(
            in_channels=3, out_channels=3, latent_channels=self.latent_channels,
            block_out_channels=list(self.block_out_channels), layers_per_block=self.layers_per_block,
            down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
            norm_num_groups=self.norm_num_groups, scaling_factor=self.scaling_factor, sample_size=image_size,
        )


@dataclass
class TextConfig:
    """The text side: a CLIP text transformer (transformers `CLIPTextModel`) and its tokenizer."""

    tokenizer: str = "word"  # "word": word-level, built offline from `vocab`; "pretrained": from a model dir
    vocab: Union[str, tuple[str, ...], None] = "world"  # "world" = suti.world.vocabulary(), a word list, or
    # null for a pretrained tokenizer
    max_length: int = 24  # tokens per prompt, BOS/EOS included (padded to this length)
    hidden_size: int = 128  # must equal unet.cross_attention_dim
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    # Cross-attention ignores the padding states (Imagen's masked text conditioning): the UNet reads only
    # BOS, the words and EOS. False (the default, and every model trained before it existed): it attends
    # to all max_length states, padding included, as Stable Diffusion does.
    mask_padding: bool = False

    def validate(self, name: str = "text") -> None:
        _check_choice(f"{name}.tokenizer", self.tokenizer, TOKENIZER_KINDS)
        if self.tokenizer == "pretrained":
            if self.vocab is not None:
                raise _fail(f"{name}.vocab", "must be null for a pretrained tokenizer", self.vocab)
        elif self.vocab is None:
            raise _fail(f"{name}.vocab", "a word-level tokenizer needs 'world' or a list of words", self.vocab)
        elif isinstance(self.vocab, str):
            if self.vocab != "world":
                raise _fail(f"{name}.vocab", "must be 'world' or a list of words", self.vocab)
        elif not self.vocab or any(not isinstance(w, str) or not w.strip() or len(w.split()) != 1 for w in self.vocab):
            raise _fail(f"{name}.vocab", "must be a non-empty list of single words", self.vocab)
        for f in ("max_length", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            _check_positive(f"{name}.{f}", getattr(self, f))
        if self.max_length < 3:
            raise _fail(f"{name}.max_length", "must leave room for BOS, one word and EOS (>= 3)", self.max_length)
        if self.hidden_size % self.num_heads:
            raise _fail(f"{name}.num_heads", f"must divide hidden_size={self.hidden_size}", self.num_heads)


@dataclass
class SchedulerConfig:
    """Noise schedule shared by training and the default (DDIM) sampler."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    timestep_spacing: str = "trailing"
    clip_sample: bool = False
    rescale_betas_zero_snr: bool = False

    def validate(self, name: str = "scheduler") -> None:
        _check_positive(f"{name}.num_train_timesteps", self.num_train_timesteps)
        _check_choice(f"{name}.beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        _check_choice(f"{name}.prediction_type", self.prediction_type, PREDICTION_TYPES)
        _check_choice(f"{name}.timestep_spacing", self.timestep_spacing, TIMESTEP_SPACINGS)
        if not 0 < self.beta_start < self.beta_end < 1:
            raise _fail(f"{name}.beta_start", "needs 0 < beta_start < beta_end < 1", (self.beta_start, self.beta_end))


@dataclass
class SubjectConfig:
    """The trainable subject layers: demo encoder tokens + gated demo cross-attention."""

    levels: tuple[str, ...] = ("mid",)  # UNet feature maps that become demo tokens: "mid" or "down.<i>"
    attn_blocks: Union[tuple[str, ...], None] = None  # "down.<i>" / "mid" / "up.<j>"; None = lowest-res blocks
    max_demos: int = MAX_DEMOS  # demo-slot embeddings (hard upper bound 8)
    pool_size: Union[int, None] = None  # adaptive-avg-pool each level to pool_size x pool_size tokens
    caption_tokens: bool = True  # append each demo's caption tokens to its image tokens
    slot_embedding: bool = True  # add a learned per-slot embedding (makes the result order-dependent)
    demo_timestep: int = 0  # timestep at which clean demos run through the UNet's down path
    # demo image tokens and the queries of demo attention carry their 2-D place; each head learns a
    # locality bias (models/subject_attn.py), so demo attention can read a demo at the same spot of the frame
    positions: bool = False

    def validate(self, name: str = "subject") -> None:
        if not self.levels:
            raise _fail(f"{name}.levels", "must name at least one level", self.levels)
        for lvl in self.levels:
            if not _is_block_name(lvl, ("down",)) and lvl != "mid":
                raise _fail(f"{name}.levels", "entries must be 'mid' or 'down.<i>'", lvl)
        if len(set(self.levels)) != len(self.levels):
            raise _fail(f"{name}.levels", "must not repeat a level", self.levels)
        if self.attn_blocks is not None:
            if not self.attn_blocks:
                raise _fail(f"{name}.attn_blocks", "must be null or a non-empty list", self.attn_blocks)
            for b in self.attn_blocks:
                if b != "mid" and not _is_block_name(b, ("down", "up")):
                    raise _fail(f"{name}.attn_blocks", "entries must be 'mid', 'down.<i>' or 'up.<j>'", b)
        if not 1 <= self.max_demos <= MAX_DEMOS:
            raise _fail(f"{name}.max_demos", f"must be in 1..{MAX_DEMOS}", self.max_demos)
        if self.pool_size is not None:
            _check_positive(f"{name}.pool_size", self.pool_size)
        if self.demo_timestep < 0:
            raise _fail(f"{name}.demo_timestep", "must be >= 0", self.demo_timestep)


def _is_block_name(name: str, kinds: tuple[str, ...]) -> bool:
    kind, _, idx = name.partition(".")
    return kind in kinds and idx.isdigit()


@dataclass
class SuTIConfig:
    """Everything that builds one SuTI model; `init="pretrained"` presets are loaded, never built randomly."""

    name: str = "custom"
    init: str = "random"
    seed: int = 0
    unet: UNetConfig = field(default_factory=UNetConfig)
    text: TextConfig = field(default_factory=TextConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    subject: SubjectConfig = field(default_factory=SubjectConfig)
    vae: Union[VAEConfig, None] = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def image_size(self) -> int:
        """Pixel size of generated images (and of the demos after preprocessing)."""
        return self.unet.sample_size * (self.vae.scale_factor if self.vae else 1)

    def validate(self) -> None:
        _check_choice("init", self.init, INIT_KINDS)
        self.unet.validate("unet")
        self.text.validate("text")
        self.scheduler.validate("scheduler")
        self.subject.validate("subject")
        if self.vae is not None:
            self.vae.validate("vae")
            if self.unet.in_channels != self.vae.latent_channels:
                raise _fail("unet.in_channels", f"must equal vae.latent_channels={self.vae.latent_channels}",
                            self.unet.in_channels)
        elif self.unet.in_channels != 3:
            raise _fail("unet.in_channels", "must be 3 for a pixel-space model (no vae)", self.unet.in_channels)
        if self.text.hidden_size != self.unet.cross_attention_dim:
            raise _fail("text.hidden_size", f"must equal unet.cross_attention_dim={self.unet.cross_attention_dim}",
                        self.text.hidden_size)
        if self.init == "random" and self.text.tokenizer != "word":
            raise _fail("text.tokenizer", "a randomly built model needs the word-level tokenizer", self.text.tokenizer)
        n = len(self.unet.block_out_channels)
        for lvl in self.subject.levels:
            if lvl != "mid" and int(lvl.split(".")[1]) >= n:
                raise _fail("subject.levels", f"down block index out of range (the UNet has {n})", lvl)
        for b in self.subject.attn_blocks or ():
            if b != "mid" and int(b.split(".")[1]) >= n:
                raise _fail("subject.attn_blocks", f"block index out of range (the UNet has {n} per path)", b)

    # -- (de)serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SuTIConfig":
        return _from_dict(cls, data, "")

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> "SuTIConfig":
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            try:
                text = Path(path_or_text).read_text()
            except OSError as e:
                raise ConfigError(f"cannot read config file {str(path_or_text)!r}: {e}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        return cls.from_dict(data)


def subject_config_from_dict(data: dict[str, Any]) -> SubjectConfig:
    cfg = _from_dict(SubjectConfig, data, "subject.")
    cfg.validate("subject")
    return cfg


def _to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    return x


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass `cls` from plain JSON data, checking every field's type (errors name the field)."""
    if not isinstance(data, dict):
        raise _fail(prefix.rstrip(".") or "config", "must be a JSON object", data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field (known: {sorted(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # e.g. a nested dataclass missing required arguments
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise _fail(name, "must not be null", value)
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(value, opt, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1])
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, name + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(name, "must be a list", value)
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(name, "must be true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(name, "must be an integer", value)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(name, "must be a number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(name, "must be a string", value)
        return value
    raise _fail(name, f"unsupported field type {tp}", value)  # pragma: no cover - a bug in this file
