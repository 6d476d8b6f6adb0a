"""`suti generate`: render a subject from reference photos (or from a catalog index) in a new context.

    suti generate --model default --refs a.png b.png c.png --prompt "the subject in the jungle" --out out/gen
    suti generate --model default --index out/index --prompt "a teapot in the jungle" --out out/gen

Writes `OUT/000.png ...` and `OUT/generation.json` (prompt, seed, settings, timings, the references or
the catalog neighbours that were used).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from retrieval.search import CLUSTER_CHOICES, DEFAULT_MEMBER_ORDER, MEMBER_ORDERS
from suti.errors import InputError
from tools import quiet_library_bars

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _read_captions(captions: list[str] | None, captions_file: Path | None, n_refs: int) -> list[str] | None:
    if captions and captions_file:
        raise InputError("give --caption or --captions-file, not both")
    if captions_file is not None:
        if not captions_file.is_file():
            raise InputError(f"--captions-file {captions_file} does not exist")
        captions = [line.strip() for line in captions_file.read_text().splitlines() if line.strip()]
    if not captions:
        return None
    if len(captions) != n_refs:
        raise InputError(f"{len(captions)} captions for {n_refs} reference images (give one per image)")
    return captions


def _load_refs(refs: list[Path]) -> list:
    import PIL.Image

    from suti.pipeline.preprocess import to_rgb_image

    images = []
    for path in refs:
        if not path.is_file():
            raise InputError(f"reference image {path} does not exist")
        try:
            with PIL.Image.open(path) as im:
                im.load()
                images.append(to_rgb_image(im, str(path)))
        except (OSError, PIL.Image.DecompressionBombError) as e:
            raise InputError(f"reference image {path} cannot be read: {e}") from None
    return images


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.glob("*.png")) and not overwrite:
        raise InputError(f"--out {out} already holds images; pass --overwrite to replace them")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create --out {out}: {e.strerror}") from None


@app.command()
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="What to render, e.g. 'the subject in the jungle'."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the PNGs and generation.json."),
    model: str = typer.Option("default", "--model", "-m", help="Model directory, preset name, or 'default'."),
    refs: list[Path] = typer.Option(None, "--refs", "-r", help="Reference photos of the subject (3-5 best)."),
    caption: list[str] = typer.Option(None, "--caption", help="Caption of each reference, in order (repeat)."),
    captions_file: Path = typer.Option(None, "--captions-file", help="One caption per line, per reference."),
    index: Path = typer.Option(None, "--index", help="Re-Imagen mode: a `suti index build` dir instead of --refs."),
    k: int = typer.Option(4, "--k", help="Re-Imagen mode: demos taken from the best cluster."),
    choose_cluster: str = typer.Option("auto", "--choose-cluster", help="Re-Imagen mode: pick the cluster by "
                                       "captions (caption coverage), vectors (dense shortlist) or auto (captions if any)."),
    member_order: str = typer.Option(DEFAULT_MEMBER_ORDER, "--member-order", help="Re-Imagen mode: which members of "
                                     "the cluster are the demos: central (the views it agrees on) or query (closest "
                                     "to the prompt)."),
    num_images: int = typer.Option(1, "--num-images", "-n", help="Images to render."),
    steps: int = typer.Option(50, "--steps", help="Denoising steps."),
    guidance: float = typer.Option(2.0, "--guidance", help="Text guidance scale."),
    subject_guidance: float = typer.Option(2.0, "--subject-guidance", help="Subject guidance scale."),
    mode: str = typer.Option("dual", "--guidance-mode", help="'dual' or 'interleaved' (Re-Imagen style)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same images)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace images already in --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    more_refs: list[Path] = typer.Argument(None, hidden=True),  # `--refs a.png b.png c.png` lands here
) -> None:
    """Render the subject of the reference photos (or of the best catalog cluster) as the prompt says."""
    import torch

    from suti.pipeline.registry import load_pipeline

    if more_refs and not refs:
        raise InputError(f"unexpected argument {str(more_refs[0])!r}: reference images go after --refs")
    refs = list(refs or []) + list(more_refs or [])
    if bool(refs) == (index is not None):
        raise InputError("give reference photos with --refs, or a catalog with --index (exactly one)")
    if not prompt.strip():
        raise InputError("--prompt is empty")
    if choose_cluster not in CLUSTER_CHOICES:
        raise InputError(f"--choose-cluster must be one of {', '.join(CLUSTER_CHOICES)}, got {choose_cluster!r}")
    if member_order not in MEMBER_ORDERS:
        raise InputError(f"--member-order must be one of {', '.join(MEMBER_ORDERS)}, got {member_order!r}")
    if num_images < 1 or num_images > 16:
        raise InputError(f"--num-images must be in [1, 16], got {num_images}")
    images = _load_refs(refs) if refs else None
    captions = _read_captions(caption, captions_file, len(refs)) if refs else None
    _prepare_out(out, overwrite)

    t0 = time.perf_counter()
    if not progress:
        quiet_library_bars()
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=not progress)
    retriever = None
    if index is not None:
        from retrieval import open_retriever

        retriever = open_retriever(index, choose_cluster=choose_cluster, member_order=member_order)
    t_load = time.perf_counter() - t0
    generator = torch.Generator().manual_seed(seed)
    t1 = time.perf_counter()
    result = pipe(prompt, subject_images=images, subject_captions=captions, retriever=retriever, retrieval_k=k,
                  num_images_per_prompt=num_images, num_inference_steps=steps, guidance_scale=guidance,
                  subject_guidance_scale=subject_guidance, guidance_mode=mode, generator=generator)
    t_gen = time.perf_counter() - t1

    files = []
    for i, image in enumerate(result.images):
        image.save(out / f"{i:03d}.png")
        files.append(f"{i:03d}.png")
    meta = {
        "prompt": prompt, "model": model, "seed": seed, "steps": steps, "guidance_scale": guidance,
        "subject_guidance_scale": subject_guidance, "guidance_mode": mode, "images": files,
        "references": [str(p) for p in refs] if refs else None, "reference_captions": captions,
        "index": str(index) if index is not None else None,
        "neighbors": [n.to_dict() for n in result.neighbors] if result.neighbors else None,
        "seconds": {"load": round(t_load, 3), "generate": round(t_gen, 3)},
    }  # fmt: skip
    (out / "generation.json").write_text(json.dumps(meta, indent=2) + "\n")
    typer.echo(f"wrote {len(files)} image(s) to {out} in {t_gen:.1f} s")
    if result.neighbors:
        used = result.neighbors[0]
        typer.echo(f"demos from cluster {used.cluster} (chosen by {used.chosen_by}): {', '.join(used.ids)}")


def main(argv: list[str] | None = None) -> int:
    """Run in-process; returns the exit code."""
    from tools.cli import run_app

    return run_app(app, argv, "suti generate")


if __name__ == "__main__":
    raise SystemExit(main())
