"""`suti world build` and `suti world show`: thin wiring over suti.world."""

from __future__ import annotations

from pathlib import Path

import typer

from suti.errors import InputError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def build(
    out: Path = typer.Option(..., "--out", help="Dataset directory to write (datasets.save_to_disk layout)."),
    clusters: int = typer.Option(40, "--clusters", help="Number of pages (one subject each)."),
    per_cluster: int = typer.Option(8, "--per-cluster", help="Clean images per page (1-64)."),
    size: int = typer.Option(64, "--size", help="Image size in pixels (16-512)."),
    seed: int = typer.Option(0, "--seed", help="World seed: same seed, byte-identical dataset."),
    noise: float = typer.Option(0.1, "--noise", help="Chance that a clean image is followed by a noise row."),
    styles: str = typer.Option("", "--styles", help="Comma-separated styles to draw from (default: all)."),
    workers: int = typer.Option(1, "--workers", help="Rendering processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Render a world of web-like cluster pages into a Hugging Face dataset."""
    import json

    from suti.world.context import STYLES
    from suti.world.dataset import BuildConfig, build_dataset

    chosen = tuple(s.strip() for s in styles.split(",") if s.strip()) if styles.strip() else STYLES
    config = BuildConfig(clusters=clusters, per_cluster=per_cluster, size=size, seed=seed, noise=noise, styles=chosen)
    path = build_dataset(out, config, workers=workers, overwrite=overwrite, progress=progress)
    manifest = json.loads((path / "world.json").read_text())
    per_split = ", ".join(f"{k} {v}" for k, v in manifest["rows_per_split"].items())
    typer.echo(f"wrote {manifest['rows']} rows ({per_split}) to {path}")


@app.command()
def show(
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    subject_id: int = typer.Option(0, "--subject-id", help="Which subject."),
    size: int = typer.Option(64, "--size", help="Render size in pixels (16-512)."),
    seed: int = typer.Option(0, "--seed", help="World seed."),
    style: str = typer.Option("photo", "--style", help="Style of every cell outside the stylization row."),
    zoom: int = typer.Option(1, "--zoom", help="Enlarge each render by this factor (nearest neighbour)."),
) -> None:
    """Write a contact sheet: one subject across the five skills."""
    from suti.world.context import Context
    from suti.world.sheet import contact_sheet
    from retrieval.atomic import atomic_write
    from suti.world.traits import make_subject

    out = Path(out).expanduser().absolute()
    if out.suffix.lower() != ".png":
        raise InputError(f"contact sheet must be a .png file, got {out.name!r}")
    if out.is_dir():
        raise InputError(f"{out} is a directory, expected a .png file path")
    sheet = contact_sheet(make_subject(subject_id, seed), size=size, base=Context(style=style), zoom=zoom)
    atomic_write(out, lambda f: sheet.save(f, format="PNG"))
    typer.echo(f"wrote {out} ({sheet.width}x{sheet.height})")

