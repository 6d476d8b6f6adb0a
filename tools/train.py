"""`suti train base|dreambooth|apprentice`: thin wiring over `suti.train`.

    suti train base --config base --out runs/base
    suti train apprentice --config apprentice --init-from runs/base --out runs/app
    suti train apprentice --out runs/app --resume                 # recipe re-read from runs/app/recipe.json
    accelerate launch --num_processes 2 --cpu -m tools.train apprentice --config apprentice_tiny --out runs/x
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from suti.errors import ConfigError
from tools import quiet_library_bars

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Train the base model, a DreamBooth expert, or the SuTI apprentice on the subject world.")

CONFIG_HELP = "Recipe name in configs/train/ (e.g. base, base_tiny) or a recipe JSON file."


def _run(kind: str, config: Optional[str], out: Path, resume: bool, max_steps: Optional[int],
         init_from: Optional[str], progress: bool, **fields) -> None:
    from suti.train import load_recipe, train

    if not progress:
        quiet_library_bars()
    recipe = None
    if config is not None:
        recipe = load_recipe(config)
        if recipe.kind != kind:
            raise ConfigError(f"recipe {config!r} is a {recipe.kind!r} recipe, not {kind!r}")
        if init_from is not None:
            recipe = load_recipe(config, init_from=init_from)
        for part, values in fields.items():
            given = {k: v for k, v in values.items() if v is not None}
            if given:
                from dataclasses import replace

                recipe = replace(recipe, **{part: replace(getattr(recipe, part), **given)})
    elif not resume:
        raise ConfigError("--config is required (only --resume can re-read the recipe from --out)")
    result = train(recipe, out, resume=resume, max_steps=max_steps, progress=progress)
    if result.metrics:
        shown = ", ".join(f"{k}={v}" for k, v in result.metrics.items())
        typer.echo(f"metrics at step {result.step}: {shown}")
    typer.echo(f"step {result.step}, {result.steps_per_s:.3f} steps/s; model: {result.model_dir}; "
               f"checkpoint: {result.checkpoint}")


_OUT = typer.Option(..., "--out", help="Run directory (checkpoints/, model/, log.jsonl, metrics.jsonl, samples/).")
_RESUME = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out.")
_STEPS = typer.Option(None, "--max-steps", help="Override the recipe's loop.max_steps.")
_INIT = typer.Option(None, "--init-from", help="Start from this trained pipeline (or run) directory.")
_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")
_MINUTES = typer.Option(None, "--max-minutes", help="Stop (with a checkpoint) after this much training time.")


@app.command()
def base(config: Optional[str] = typer.Option(None, "--config", help=CONFIG_HELP), out: Path = _OUT,
         resume: bool = _RESUME, max_steps: Optional[int] = _STEPS, init_from: Optional[str] = _INIT,
         max_minutes: Optional[float] = _MINUTES, progress: bool = _PROGRESS) -> None:
    """Text-to-image on world captions (the stand-in for Stable Diffusion)."""
    _run("base", config, out, resume, max_steps, init_from, progress, loop={"max_minutes": max_minutes})


@app.command()
def dreambooth(config: Optional[str] = typer.Option(None, "--config", help=CONFIG_HELP), out: Path = _OUT,
               resume: bool = _RESUME, max_steps: Optional[int] = _STEPS, init_from: Optional[str] = _INIT,
               subject: Optional[int] = typer.Option(None, "--subject", help="World subject id to fine-tune on."),
               max_minutes: Optional[float] = _MINUTES, progress: bool = _PROGRESS) -> None:
    """Fine-tune the base on one subject's 3-5 photos with an identifier token (baseline and expert)."""
    _run("dreambooth", config, out, resume, max_steps, init_from, progress,
         loop={"max_minutes": max_minutes}, dreambooth={"subject_id": subject})


@app.command()
def apprentice(config: Optional[str] = typer.Option(None, "--config", help=CONFIG_HELP), out: Path = _OUT,
               resume: bool = _RESUME, max_steps: Optional[int] = _STEPS, init_from: Optional[str] = _INIT,
               max_minutes: Optional[float] = _MINUTES, progress: bool = _PROGRESS) -> None:
    """Base + subject layers: (demos, prompt) -> a new context of the subject (oracle or expert targets)."""
    _run("apprentice", config, out, resume, max_steps, init_from, progress, loop={"max_minutes": max_minutes})


@app.command()
def export(run: Path = typer.Argument(..., help="Training run directory (its model/ holds the EMA weights)."),
           out: Path = typer.Option(..., "--out", help="Directory to write, e.g. models/world."),
           fp16: bool = typer.Option(True, "--fp16/--fp32", help="Store weights in float16 (half the size)."),
           command: str = typer.Option("", "--command", help="The command that rebuilt this run (provenance).")) -> None:
    """Copy a run's model into a small (fp16) pipeline directory with training.json provenance beside it."""
    from suti.train.export import export_run

    info = export_run(run, out, fp16=fp16, command=command)
    typer.echo(f"wrote {out} ({info['size_mb']:.1f} MB) from step {info['step']} of {run}")


def main(argv: list[str] | None = None) -> int:
    from tools.cli import run_app

    return run_app(app, argv, "suti train")


if __name__ == "__main__":  # `accelerate launch -m tools.train ...` runs this module as a script
    raise SystemExit(main())
