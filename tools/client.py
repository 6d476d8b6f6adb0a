"""`suti client`: talk to a running `suti serve` from the shell.

    suti client subjects create a.png b.png c.png --caption "a teapot" ...   # prints the subject id
    suti client subjects get sub_...      |   suti client subjects delete sub_...
    suti client generate --subject sub_... --prompt "the subject on the beach" --seed 0 --out out/gen
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from suti.errors import InputError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
subjects = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(subjects, name="subjects", help="Register, show and delete subjects.")

URL = typer.Option("http://127.0.0.1:8000", "--url", envvar="SUTI_URL", help="Server base URL.")
KEY = typer.Option(None, "--api-key", envvar="SUTI_API_KEY", help="API key (when the server requires one).")


def _client(url: str, api_key: str | None):
    from suti.serve.client import SutiClient

    return SutiClient(url, api_key=api_key, retries=2)


@subjects.command("create")
def create(
    images: list[Path] = typer.Argument(..., help="3-5 reference photos (PNG/JPEG/WebP)."),
    caption: list[str] = typer.Option(None, "--caption", help="One per image, in order (optional)."),
    url: str = URL,
    api_key: str = KEY,
) -> None:
    """Register a subject; prints its record (JSON) with the subject_id."""
    with _client(url, api_key) as client:
        typer.echo(json.dumps(client.create_subject(images, captions=caption or None), indent=2))


@subjects.command("get")
def get(subject_id: str = typer.Argument(...), url: str = URL, api_key: str = KEY) -> None:
    """Show a subject's record."""
    with _client(url, api_key) as client:
        typer.echo(json.dumps(client.get_subject(subject_id), indent=2))


@subjects.command("delete")
def delete(subject_id: str = typer.Argument(...), url: str = URL, api_key: str = KEY) -> None:
    """Delete a subject."""
    with _client(url, api_key) as client:
        client.delete_subject(subject_id)
    typer.echo(f"deleted {subject_id}")


@app.command()
def generate(
    prompt: str = typer.Option(..., "--prompt", help="What to render."),
    subject: str = typer.Option(None, "--subject", help="A registered subject id."),
    image: list[Path] = typer.Option(None, "--image", help="Inline reference photos instead of --subject."),
    n: int = typer.Option(1, "--n", help="Images to generate."),
    steps: int = typer.Option(None, "--steps", help="Denoising steps (server default if omitted)."),
    seed: int = typer.Option(None, "--seed", help="Seed of image 0 (image i uses seed + i)."),
    guidance_scale: float = typer.Option(None, "--guidance-scale", help="Text guidance."),
    subject_guidance_scale: float = typer.Option(None, "--subject-guidance-scale", help="Subject guidance."),
    size: int = typer.Option(None, "--size", help="Output side in px."),
    out: Path = typer.Option(Path("out/client"), "--out", help="Folder for the PNGs and generation.json."),
    url: str = URL,
    api_key: str = KEY,
) -> None:
    """Generate images of a subject and write them as PNGs."""
    if (subject is None) == (not image):
        raise InputError("give exactly one of --subject ID or --image FILE (repeated)")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    with _client(url, api_key) as client:
        result = client.generate(prompt, subject_id=subject, images=image or None, n=n, steps=steps, seed=seed,
                                 guidance_scale=guidance_scale, subject_guidance_scale=subject_guidance_scale,
                                 size=size)
    out.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(result.images):
        im.save(out / f"{i:03d}.png")
    (out / "generation.json").write_text(json.dumps({**result.info, "seeds": result.seeds}, indent=2) + "\n")
    typer.echo(f"wrote {len(result.images)} image(s) to {out} (seed {result.info['seed']}, "
               f"{result.info['timings_ms']['total']:.0f} ms)")


def main(argv: list[str] | None = None) -> int:
    from tools.cli import run_app

    return run_app(app, argv, "suti client")


if __name__ == "__main__":
    raise SystemExit(main())
