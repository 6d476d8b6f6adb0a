"""`suti demo`: the bundled model on held-out subjects, zero-shot.

Writes a PNG grid (per subject: its demos | one prompt per skill -> outputs; below: the oracle's render of
each prompt), prints the conditioning metrics (x0 error at high noise with vs without text and demos)
and the world DreamBench graders' scores of the samples per skill, beside the ground-truth ceiling.
`suti eval auto` runs the full benchmark; this is the quick look.
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
    guidance: float = typer.Option(2.0, "--guidance", min=0.0, help="Text guidance scale."),
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
    samples: list[dict] = []
    path = sample_grid(pipe, recipe, out, collect=samples)
    tokenize = lambda texts: pipe.tokenize(texts).input_ids  # noqa: E731
    module = TrainModule(pipe, recipe)
    metrics = conditioning_metrics(module, metric_batch(recipe, tokenize, pipe.image_size), recipe)
    ids = ", ".join(str(i) for i in validation_subjects(recipe))
    typer.echo(f"wrote {path}: held-out subjects {ids}; rows = demos | one prompt per skill, oracle below")
    typer.echo("conditioning (x0 error in grey levels at t >= 800, lower is better): "
               + ", ".join(f"{k}={v}" for k, v in metrics.items()))
    typer.echo(grader_table(samples))


def grader_table(samples: list[dict]) -> str:
    """The world DreamBench graders' scores of the samples (and of the oracle's renders), per skill."""
    import numpy as np

    from suti.eval.graders import Graders
    from suti.world import render

    graders = Graders.load()
    subjects, prompts = [d["subject"] for d in samples], [d["prompt"] for d in samples]
    contexts, demos = [d["context"] for d in samples], [d["demos"] for d in samples]
    size = samples[0]["image"].size[0]
    truth = [render(d["subject"], d["context"], size) for d in samples]
    model = graders.score([d["image"] for d in samples], subjects, prompts, demos, contexts)
    ceiling = graders.score(truth, subjects, prompts, demos, contexts)
    keys = ("subject", "text", "realism", "overall")

    def row(label: str, idx: list[int]) -> str:
        return (f"  {label:<20}" + "".join(f"{np.mean([model[i][k] for i in idx]):>10.3f}" for k in keys)
                + f"{np.mean([ceiling[i]['overall'] for i in idx]):>12.3f}")

    lines = ["graders (0-1, higher is better; ground truth = the oracle's render of the same prompt):",
             f"  {'skill':<20}" + "".join(f"{k:>10}" for k in keys) + f"{'gt overall':>12}"]
    for skill in dict.fromkeys(d["skill"] for d in samples):
        lines.append(row(skill, [i for i, d in enumerate(samples) if d["skill"] == skill]))
    lines.append(row("all", list(range(len(samples)))))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from tools.cli import run_app

    return run_app(app, argv, "suti demo")


if __name__ == "__main__":
    raise SystemExit(main())
