"""`suti eval human create | serve | report`: thin wiring over `suti.human`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from suti.errors import InputError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else ()


@app.command()
def create(
    eval_dir: Path = typer.Option(..., "--from", help="Evaluation folder (items.jsonl, demos/, outputs/)."),
    db: str = typer.Option("study.db", "--db", help="SQLite file path or a postgresql:// URL."),
    name: str = typer.Option("study", "--name", help="Study name (unique in the database)."),
    systems: str = typer.Option(None, "--systems", help="Comma-separated systems to rate (default: all)."),
    raters: int = typer.Option(3, "--raters", help="Number of raters (named r01, r02, ...)."),
    rater_names: str = typer.Option(None, "--rater-names", help="Comma-separated rater names (overrides --raters)."),
    raters_per_item: int = typer.Option(3, "--raters-per-item", help="Raters who rate each item."),
    gold: str = typer.Option("10%", "--gold", help="Share of each rater's pages that are gold checks."),
    gold_good: str = typer.Option("truth", "--gold-good", help="Known-good gold: truth (world render) or photo."),
    world_seed: int = typer.Option(None, "--world-seed", help="World seed for truth renders (default: results.json)."),
    pairwise: bool = typer.Option(False, "--pairwise", help="Pairwise mode: A / B / tie / both bad."),
    seed: int = typer.Option(0, "--seed", help="Seed for assignment, order and gold choice."),
    base_url: str = typer.Option("http://127.0.0.1:8000", "--base-url", help="Server address printed in links."),
    links: Path = typer.Option(None, "--links", help="Also write rater links (rater,url) to this CSV file."),
) -> None:
    """Create a blinded study from an evaluation folder; prints the admin token and rater links once."""
    from suti.human.db import Database
    from suti.human.study import StudyConfig, create_study, parse_fraction

    if raters < 1:
        raise InputError(f"--raters must be at least 1, got {raters}")
    names = _names(rater_names) or tuple(f"r{i + 1:02d}" for i in range(raters))
    config = StudyConfig(name=name, mode="pairwise" if pairwise else "absolute", systems=_names(systems),
                         raters=names, raters_per_item=raters_per_item, gold_fraction=parse_fraction(gold),
                         gold_good=gold_good, world_seed=world_seed, seed=seed)  # fmt: skip
    database = Database.open(db)
    try:
        made = create_study(database, eval_dir, config)
    finally:
        database.dispose()
    c = made.counts
    typer.echo(f"study {made.name!r}: {c['items']} items x {c['systems']} systems -> {c['tasks']} tasks, "
               f"{c['gold_tasks']} gold tasks, {c['raters']} raters, {c['assignments']} pages to rate")  # fmt: skip
    for note in made.notes:
        typer.echo(f"note: {note}")
    base = base_url.rstrip("/")
    typer.echo(f"admin: {base}/admin/{made.name}?token={made.admin_token}   (shown once; keep it)")
    rows = [(rater, f"{base}/r/{token}") for rater, token in made.rater_tokens.items()]
    for rater, url in rows:
        typer.echo(f"rater {rater}: {url}")
    if links is not None:
        links.write_text("rater,url\n" + "".join(f"{r},{u}\n" for r, u in rows))


@app.command()
def serve(
    db: str = typer.Option("study.db", "--db", help="SQLite file path or a postgresql:// URL."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
) -> None:
    """Serve the rating pages (raters open their links; admins open /admin/STUDY?token=...)."""
    from sqlalchemy import select

    from suti.human.app import serve as run_server
    from suti.human.db import Database, Study

    database = Database.open(db, create=False)
    with database.read() as s:
        names = list(s.scalars(select(Study.name)))
    database.dispose()
    if not names:
        raise InputError(f"the database {db} holds no study; run `suti eval human create` first")
    typer.echo(
        f"serving {len(names)} stud{'y' if len(names) == 1 else 'ies'} ({', '.join(names)}) on http://{host}:{port}"
    )
    run_server(db, host, port)


@app.command()
def report(
    db: str = typer.Option("study.db", "--db", help="SQLite file path or a postgresql:// URL."),
    out: Path = typer.Option(..., "--out", help="Folder for report.html, ratings.{csv,jsonl,parquet}, summary.json."),
    study: str = typer.Option(None, "--study", help="Study name (needed when the database holds several)."),
    min_gold_accuracy: float = typer.Option(None, "--min-gold-accuracy", help="Drop raters below this gold accuracy."),
    gold_tolerance: float = typer.Option(0.5, "--gold-tolerance", help="Max distance from a gold answer that passes."),
    n_boot: int = typer.Option(2000, "--bootstrap", help="Bootstrap resamples for the CIs."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    grid_items: int = typer.Option(12, "--grid-items", help="Items shown in the HTML image grid."),
) -> None:
    """Statistics (CIs, agreement, gold accuracy, Bradley-Terry) as HTML, CSV, JSONL and parquet."""
    from suti.human.db import Database
    from suti.human.report import build_report, write_report
    from suti.human.stats import StatsConfig

    config = StatsConfig(n_boot=n_boot, seed=seed, gold_tolerance=gold_tolerance, min_gold_accuracy=min_gold_accuracy)
    database = Database.open(db, create=False)
    try:
        result = build_report(database, study, config, grid_items)
    finally:
        database.dispose()
    paths = write_report(result, out)
    typer.echo(f"{len(result.ratings)} ratings; dropped raters: {', '.join(result.dropped) or 'none'}")
    for frame in (result.by_system, result.preferences):
        if not frame.empty:
            typer.echo(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"wrote {', '.join(p.name for p in paths.values())} to {out}")


def main(argv: list[str] | None = None) -> int:
    from tools.cli import run_app

    return run_app(app, argv, "suti eval human")


if __name__ == "__main__":
    sys.exit(main())
