"""Training recipes as typed dataclasses, stored as JSON in `configs/train/`.

    recipe = load_recipe("apprentice_tiny")        # a name in configs/train/, or a path to a JSON file
    recipe.kind                                    # "base" | "dreambooth" | "apprentice"

A recipe names the model it trains (`model`: a preset or SuTIConfig JSON, randomly initialised) or the
trained pipeline it starts from (`init_from`: a directory written by a previous run, e.g. `RUN/model`).
Every invalid value raises `ConfigError` naming its field, e.g. ``loop.batch_size: must be > 0``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

from suti.errors import ConfigError
from suti.models.config import _from_dict  # the typed JSON reader shared with the model configs
from suti.world.context import ACCESSORY_P, RECOLOR_P, STYLE_P, VIEW_P

KINDS = ("base", "dreambooth", "apprentice")
PRECISIONS = ("auto", "no", "fp16", "bf16")


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:  # NaN fails too
        raise ConfigError(f"{name}: must be a number > 0, got {value!r}")


def _fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}: must be in [0, 1], got {value!r}")


@dataclass
class LoopConfig:
    """Steps, batch, precision, EMA, checkpoints, validation and logging cadence."""

    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16  # samples per process per micro-batch
    grad_accum: int = 1
    mixed_precision: str = "auto"  # auto = fp16 on CUDA, none on CPU (CPU autocast is slower here)
    ema_decay: float = 0.999  # 0 turns EMA off (the exported model then holds the raw weights)
    checkpoint_every: int = 250
    keep_last: int = 3
    validate_every: int = 250  # conditioning metrics (cheap); 0 = never
    grid_every: int = 1000  # validation sample grid PNG (slower); 0 = never
    log_every: int = 10
    max_minutes: float = 0.0  # > 0: stop (and checkpoint) when this wall-clock budget is spent
    seed: int = 0

    def validate(self, name: str = "loop") -> None:
        for f in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "keep_last", "log_every"):
            _positive(f"{name}.{f}", getattr(self, f))
        for f in ("validate_every", "grid_every", "max_minutes", "seed"):
            if getattr(self, f) < 0:
                raise ConfigError(f"{name}.{f}: must be >= 0, got {getattr(self, f)!r}")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"{name}.mixed_precision: must be one of {list(PRECISIONS)}, got {self.mixed_precision!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{name}.ema_decay: must be in [0, 1), got {self.ema_decay!r}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then constant or cosine decay; `base_lr_scale` slows the base in joint runs."""

    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "constant"  # "constant" | "cosine" (to 10 % of lr at max_steps)
    grad_clip: float = 1.0  # 0 = no clipping
    base_lr_scale: float = 1.0  # lr multiplier of base (UNet/text) weights when subject layers also train
    gate_lr_scale: float = 1.0  # lr multiplier of the demo-attention gates (scalars that start at 0) and,
    # with subject.positions, of the per-head locality strengths
    text_lr_scale: float = 1.0  # lr multiplier of the text encoder (on top of base_lr_scale), when it trains

    def validate(self, name: str = "optim") -> None:
        _positive(f"{name}.lr", self.lr)
        _positive(f"{name}.base_lr_scale", self.base_lr_scale)
        _positive(f"{name}.gate_lr_scale", self.gate_lr_scale)
        _positive(f"{name}.text_lr_scale", self.text_lr_scale)
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError(f"{name}: warmup_steps, weight_decay and grad_clip must be >= 0")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"{name}.schedule: must be 'constant' or 'cosine', got {self.schedule!r}")


@dataclass
class NoiseConfig:
    """Training timesteps (uniform, plus a share drawn from the high-noise end where conditioning matters)
    and the per-pixel loss weight of the subject."""

    high_noise_fraction: float = 0.5  # share of samples with t drawn from [high_noise_from, T)
    high_noise_from: int = 700
    text_dropout: float = 0.1  # base / dreambooth: empty prompt (for classifier-free guidance)
    # Loss weight of the subject's own pixels (its body coverage from the renderer) against the rest of
    # the frame; 1 = plain MSE. Oracle targets only (expert and DreamBooth photos count as weight 1).
    subject_weight: float = 1.0
    # Grow that weighted region by this many pixels (a max filter over the coverage), so the background
    # just outside the outline counts too: a wrong silhouette then costs as much as a wrong colour.
    subject_margin: int = 0
    # Extra loss weight of the pixels that tell this subject's shape from the other shape classes: the
    # mean |body - body_k| over the same subject rendered as each other shape k in the same context
    # (the outline's tips, notches and lobes). 1 = off. The shape is what the subject word decides and
    # the plain or subject-weighted loss barely rewards: it lives on a thin band of the frame.
    shape_weight: float = 1.0
    # Extra loss weight of the accessory's pixels (the renderer's accessory coverage: a hat above the
    # outline, glasses across it). 1 = off. A worn accessory is a few pixels at 32 px, and a hat lies
    # outside the body that `subject_weight` marks, so the plain loss barely notices a missing one.
    accessory_weight: float = 1.0

    def validate(self, name: str = "noise") -> None:
        _fraction(f"{name}.high_noise_fraction", self.high_noise_fraction)
        _fraction(f"{name}.text_dropout", self.text_dropout)
        if self.high_noise_from < 0:
            raise ConfigError(f"{name}.high_noise_from: must be >= 0, got {self.high_noise_from!r}")
        _positive(f"{name}.subject_weight", self.subject_weight)
        _positive(f"{name}.shape_weight", self.shape_weight)
        _positive(f"{name}.accessory_weight", self.accessory_weight)
        if isinstance(self.subject_margin, bool) or not isinstance(self.subject_margin, int) \
                or not 0 <= self.subject_margin <= 8:
            raise ConfigError(f"{name}.subject_margin: must be an integer 0-8 (pixels), got {self.subject_margin!r}")


@dataclass
class WorldConfig:
    """Where samples come from: the procedural world, train-split subjects only."""

    world_seed: int = 0
    num_subjects: int = 2000  # subject ids 0..num_subjects-1 (train split ones are used)

    def validate(self, name: str = "world") -> None:
        _positive(f"{name}.num_subjects", self.num_subjects)
        if self.world_seed < 0:
            raise ConfigError(f"{name}.world_seed: must be >= 0, got {self.world_seed!r}")


@dataclass
class DreamBoothConfig:
    """One subject's photos, captioned with an identifier token; optional prior preservation."""

    subject_id: int = 0
    num_photos: int = 4  # 3-5 photos in random contexts of the subject (seeded by subject id)
    identifier: str = "sks"  # out-of-vocabulary for the world tokenizer -> a token base training never saw
    prior_fraction: float = 0.0  # share of each batch that is other subjects with their plain captions
    train_text_encoder: bool = False
    # A folder of the user's own photos with `captions.jsonl` ({"file", "caption"} per line) to fine-tune
    # on instead of world subject `subject_id` (whose held-out renders then no longer validate the run).
    photos: Union[str, None] = None

    def validate(self, name: str = "dreambooth") -> None:
        if self.subject_id < 0:
            raise ConfigError(f"{name}.subject_id: must be >= 0, got {self.subject_id!r}")
        if not 1 <= self.num_photos <= 8:
            raise ConfigError(f"{name}.num_photos: must be in 1..8, got {self.num_photos!r}")
        if not self.identifier.strip() or len(self.identifier.split()) != 1:
            raise ConfigError(f"{name}.identifier: must be one word, got {self.identifier!r}")
        _fraction(f"{name}.prior_fraction", self.prior_fraction)


DEMO_CONTEXTS = ("any", "photo")


@dataclass
class ApprenticeConfig:
    """(demos of a subject, prompt) -> a new context of the same subject, from the oracle or from experts."""

    min_demos: int = 3
    max_demos: int = 3
    demo_dropout: float = 0.1  # demos off, text kept
    all_dropout: float = 0.1  # text and demos off
    prompt_dropout: float = 0.0  # text off, demos kept: the demos alone must say who the subject is
    expert_fraction: float = 0.0  # share of targets taken from an experts dataset instead of the oracle
    expert_dataset: Union[str, None] = None  # `suti experts run` output (HF dataset directory)
    train_base: bool = False  # also train UNet + text encoder (joint), else only the subject layers
    # Contexts of the demos: "any" = random contexts of every skill (stylised, recoloured, turned...);
    # "photo" = what a user uploads and the benchmark gives: photo style, upright, centred, own colour,
    # nothing worn, the first on the plain background and the others on random scenes.
    demo_contexts: str = "any"
    # The targets' mix: chances that a target is recoloured (the prompt names a colour the demos do not
    # show), drawn in a non-photo style, wearing an accessory, and of each view change (turned, mirrored,
    # resized, moved; photo demos show none of these). The defaults are the base recipe's mix.
    recolor_fraction: float = RECOLOR_P
    style_fraction: float = STYLE_P
    accessory_fraction: float = ACCESSORY_P
    view_fraction: float = VIEW_P

    def validate(self, name: str = "apprentice") -> None:
        if self.demo_contexts not in DEMO_CONTEXTS:
            raise ConfigError(f"{name}.demo_contexts: expected one of {', '.join(DEMO_CONTEXTS)}, got {self.demo_contexts!r}")
        if not 1 <= self.min_demos <= self.max_demos <= 8:
            raise ConfigError(f"{name}: need 1 <= min_demos <= max_demos <= 8, got {self.min_demos}, {self.max_demos}")
        for f in ("demo_dropout", "all_dropout", "prompt_dropout", "expert_fraction", "recolor_fraction", "style_fraction",
                  "accessory_fraction", "view_fraction"):
            _fraction(f"{name}.{f}", getattr(self, f))
        if self.demo_dropout + self.all_dropout + self.prompt_dropout > 1.0:
            raise ConfigError(f"{name}: demo_dropout + all_dropout + prompt_dropout must be <= 1")
        if self.expert_fraction > 0 and not self.expert_dataset:
            raise ConfigError(f"{name}.expert_dataset: expert_fraction > 0 needs an experts dataset directory")


@dataclass
class ValidationConfig:
    num_subjects: int = 2  # held-out (test_subject split) subjects in metrics and grid
    metric_batch: int = 16  # samples in the conditioning metrics (fixed noise, t >= metric_t_from)
    metric_t_from: int = 800
    sample_steps: int = 25
    guidance_scale: float = 3.0
    subject_guidance_scale: float = 2.0

    def validate(self, name: str = "validation") -> None:
        for f in ("num_subjects", "metric_batch", "sample_steps"):
            _positive(f"{name}.{f}", getattr(self, f))


@dataclass
class SubjectOverrides:
    """Change the subject layers of an `init_from` model (null = keep): weights whose name and shape
    still fit are carried over, new attention blocks start zero-gated, new levels get fresh heads.
    `pool_size` pools every demo level to N x N tokens (no weight changes shape: the same heads read
    fewer, averaged tokens, which makes demo attention cheaper)."""

    levels: Union[tuple[str, ...], None] = None
    attn_blocks: Union[tuple[str, ...], None] = None
    caption_tokens: Union[bool, None] = None
    positions: Union[bool, None] = None
    pool_size: Union[int, None] = None

    def changes(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def validate(self, name: str = "subject_overrides") -> None:
        from suti.models.config import SubjectConfig

        dataclasses.replace(SubjectConfig(), **self.changes()).validate(name)


@dataclass
class TrainRecipe:
    name: str = "custom"
    kind: str = "base"
    model: str = "world"  # preset name or SuTIConfig JSON path (random init) ...
    init_from: Union[str, None] = None  # ... or a trained pipeline directory to start from
    add_pooled_text: bool = False  # give the UNet pooled text conditioning if it lacks it (models/pooled_text.py)
    subject_overrides: Union[SubjectOverrides, None] = None  # reshape the init_from model's subject layers
    loop: LoopConfig = field(default_factory=LoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    dreambooth: DreamBoothConfig = field(default_factory=DreamBoothConfig)
    apprentice: ApprenticeConfig = field(default_factory=ApprenticeConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind: must be one of {list(KINDS)}, got {self.kind!r}")
        for part in ("loop", "optim", "noise", "world", "dreambooth", "apprentice", "validation"):
            getattr(self, part).validate(part)
        if self.subject_overrides is not None:
            if not self.init_from:
                raise ConfigError("subject_overrides: needs init_from (a fresh model takes its subject layout "
                                  "from its model config)")
            self.subject_overrides.validate("subject_overrides")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainRecipe":
        return _from_dict(cls, data, "")


def recipe_dir() -> Path:
    return Path(str(resources.files("configs").joinpath("train")))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.json"))


def load_recipe(name_or_path: str | Path, **overrides: Any) -> TrainRecipe:
    """A recipe by name (configs/train/<name>.json) or JSON path; `overrides` replace top-level fields."""
    name = str(name_or_path)
    path = recipe_dir() / f"{name}.json" if name in recipe_names() else Path(name)
    if not path.is_file():
        raise ConfigError(f"recipe: {name!r} is neither a recipe name ({', '.join(recipe_names())}) nor a JSON file")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"recipe {path.name}: cannot read JSON: {e}") from None
    recipe = TrainRecipe.from_dict(data)
    return dataclasses.replace(recipe, **overrides) if overrides else recipe
