"""`suti experts run`: a DreamBooth expert per cluster, new prompts, world-CLIP filtering -> HF dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Per-cluster DreamBooth experts that render apprenticeship targets.")


@app.command()
def run(
    out: Path = typer.Option(..., "--out", help="Directory: experts/<subject>/, dataset/, experts.json."),
    clusters: int = typer.Option(20, "--clusters", min=1, help="Train-split subjects (clusters) to run."),
    prompts: int = typer.Option(10, "--prompts", min=1, help="New prompts rendered per expert."),
    recipe: str = typer.Option("dreambooth", "--recipe", help="DreamBooth recipe (name or JSON path)."),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Base pipeline (default: the recipe's)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="DreamBooth steps per expert."),
    keep_fraction: float = typer.Option(0.5, "--keep-fraction", help="Top share kept per cluster."),
    min_score: float = typer.Option(0.0, "--min-score", help="Minimum overall score sqrt(subject*text)."),
    sample_steps: int = typer.Option(25, "--sample-steps", min=1, help="Sampling steps per image."),
    clip_dir: Optional[Path] = typer.Option(None, "--clip-dir", help="World CLIP folder (default: committed)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train one expert per cluster, render, score with the world CLIP, keep the best; write the dataset."""
    from suti.eval.clip_world import WEIGHTS_DIR, load_world_clip
    from suti.train.experts import ExpertsConfig, run_experts

    cfg = ExpertsConfig(recipe=recipe, init_from=init_from, clusters=clusters, prompts_per_cluster=prompts,
                        keep_fraction=keep_fraction, min_score=min_score, max_steps=max_steps,
                        sample_steps=sample_steps).validate()
    scorer = load_world_clip(clip_dir or WEIGHTS_DIR)
    report = run_experts(cfg, out, scorer, progress=progress)
    typer.echo(f"{report['clusters']} experts, {report['outputs']} outputs, kept {report['kept']} "
               f"(ratio {report['kept_ratio']}); mean score kept {report['mean_score_kept']} vs all "
               f"{report['mean_score_all']}; dataset: {out / report['dataset']}")


def main(argv: list[str] | None = None) -> int:
    from tools.cli import run_app

    return run_app(app, argv, "suti experts")


if __name__ == "__main__":
    raise SystemExit(main())
