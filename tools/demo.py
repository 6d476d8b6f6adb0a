"""`suti demo`: the bundled model on held-out subjects, zero-shot.

Writes a PNG grid (per subject: its demos | one prompt per skill -> outputs; below: the oracle's render of
each prompt) and prints the conditioning metrics (x0 error at high noise with vs without text and demos).
The graders of `suti eval auto` give the real scores; this is the quick look.
"""

from __future__ import annotations

from pathlib import Path

import typer

from suti.errors import ModelLoadError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def demo(
    model: Path = typer.Option(Path("models/world"), "--model", help="A SuTI pipeline directory."),
    out: Path = typer.Option(Path("demo.png"), "--out", help="PNG grid to write."),
    subjects: int = typer.Option(3, "--subjects", min=1, max=20, help="Held-out subjects to show."),
    steps: int = typer.Option(25, "--steps", min=1, help="Sampling steps (DDIM)."),
    guidance: float = typer.Option(3.0, "--guidance", min=0.0, help="Text guidance scale."),
    subject_guidance: float = typer.Option(2.0, "--subject-guidance", min=0.0, help="Demo guidance scale."),
    seed: int = typer.Option(0, "--seed", min=0, help="Picks the demo and prompt contexts."),
) -> None:
    """Render held-out subjects from 3 demos each, one prompt per skill; print conditioning metrics."""
    import torch

    from suti.pipeline import SuTIPipeline
    from suti.train.data import validation_subjects
    from suti.train.model import TrainModule
    from suti.train.recipe import LoopConfig, TrainRecipe, ValidationConfig
    from suti.train.validate import conditioning_metrics, metric_batch, sample_grid

    if not (model / "model_index.json").is_file():
        raise ModelLoadError(f"no SuTI model in {str(model)!r}: train one (docs/training.md) or pass --model")
    pipe = SuTIPipeline.from_pretrained(model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    recipe = TrainRecipe(name="demo", kind="apprentice", loop=LoopConfig(seed=seed),
                         validation=ValidationConfig(num_subjects=subjects, metric_batch=4 * subjects,
                                                     sample_steps=steps, guidance_scale=guidance,
                                                     subject_guidance_scale=subject_guidance))
    path = sample_grid(pipe, recipe, out)
    tokenizer = pipe.tokenizer
    tokenize = lambda texts: tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,  # noqa: E731
                                       truncation=True, return_tensors="pt").input_ids
    module = TrainModule(pipe, recipe)
    metrics = conditioning_metrics(module, metric_batch(recipe, tokenize, pipe.image_size), recipe)
    ids = ", ".join(str(i) for i in validation_subjects(recipe))
    typer.echo(f"wrote {path}: held-out subjects {ids}; rows = demos | one prompt per skill, oracle below")
    typer.echo("conditioning (x0 error in grey levels at t >= 800, lower is better): "
               + ", ".join(f"{k}={v}" for k, v in metrics.items()))


def main(argv: list[str] | None = None) -> int:
    from tools.cli import run_app

    return run_app(app, argv, "suti demo")


if __name__ == "__main__":
    raise SystemExit(main())
