"""Checkpoints of a training run: trainable weights only, the config that built them, and loop state.

    RUN/checkpoints/step-0000500/trainable.safetensors   raw trainable weights, by TrainModule names
                                 ema.safetensors         their EMA (when EMA is on)
                                 state.pt                optimizer state, step, EMA step, elapsed time
                                 config.json             {"recipe": TrainRecipe, "model": SuTIConfig}
    RUN/model/                   SuTIPipeline.save_pretrained of the EMA weights (rewritten at each checkpoint)

A checkpoint directory is written under a temporary name and renamed when complete, so a run killed
mid-write resumes from the previous one. Only the last `keep_last` are kept.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from suti.errors import ModelLoadError

CKPT_DIR = "checkpoints"
MODEL_DIR = "model"
PREFIX = "step-"


class EMA:
    """Exponential moving average of named parameters, with the usual warm-up (decay grows with steps)."""

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float):
        self.decay, self.step_count = decay, 0
        self.shadow = {n: p.detach().clone().float() for n, p in params.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.step_count) / (10 + self.step_count))

    @torch.no_grad()
    def update(self, params: dict[str, torch.nn.Parameter]) -> None:
        self.step_count += 1
        d = self.current_decay()
        for n, p in params.items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - d)

    @contextmanager
    @torch.no_grad()
    def applied(self, params: dict[str, torch.nn.Parameter]) -> Iterator[None]:
        """Parameters temporarily hold the EMA weights (for validation and export)."""
        saved = {n: p.detach().clone() for n, p in params.items()}
        for n, p in params.items():
            p.copy_(self.shadow[n])
        try:
            yield
        finally:
            for n, p in params.items():
                p.copy_(saved[n])


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    done = [p for p in d.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.pt").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: str | Path, step: int, params: dict[str, torch.nn.Parameter], ema: EMA | None,
                    optimizer: torch.optim.Optimizer, config: dict[str, Any], extra: dict[str, Any],
                    keep_last: int) -> Path:
    root = Path(run_dir) / CKPT_DIR
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {"format": "pt", "step": str(step)}
    save_file({n: p.detach().contiguous() for n, p in params.items()}, str(tmp / "trainable.safetensors"), metadata=meta)
    if ema is not None:
        save_file({n: t.contiguous() for n, t in ema.shadow.items()}, str(tmp / "ema.safetensors"), metadata=meta)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {"step": step, "optimizer": optimizer.state_dict(), "ema_steps": ema.step_count if ema else 0, **extra}
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt: Path, params: dict[str, torch.nn.Parameter], ema: EMA | None,
                    optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Load weights (+ EMA, optimizer) into the live objects; returns the saved loop state."""
    try:
        weights = load_file(str(ckpt / "trainable.safetensors"))
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as e:
        raise ModelLoadError(f"cannot read checkpoint {ckpt.name}: {e}") from None
    if set(weights) != set(params):
        diff = sorted(set(weights) ^ set(params))[:3]
        raise ModelLoadError(f"checkpoint {ckpt.name} does not match this recipe's trainable weights: {diff}")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n])
    if ema is not None:
        if (ckpt / "ema.safetensors").is_file():
            shadow = load_file(str(ckpt / "ema.safetensors"))
            ema.shadow = {n: shadow[n].float() for n in params}
            ema.step_count = int(state.get("ema_steps", 0))
        else:
            ema.shadow = {n: p.detach().clone().float() for n, p in params.items()}
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    return state


def export_pipeline(pipe, out: str | Path, fp16: bool = False) -> Path:
    """save_pretrained into `out` atomically (tmp dir + rename); fp16 halves the size (weights only)."""
    out = Path(out)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    if fp16:
        pipe.to(torch.float16)
    try:
        pipe.save_pretrained(tmp)
    finally:
        if fp16:
            pipe.to(torch.float32)
    old = out.with_name(f".old-{out.name}")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out
