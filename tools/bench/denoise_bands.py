"""Denoising-band probe: how well a model predicts the clean image, band by band of the timestep.

    python -m tools.bench.denoise_bands --model models/world [--model DIR2 ...] --out bench/bands.json

The conditioning metrics of training look only at high noise (t >= 800), where the prompt and the demos
decide the layout. Sample quality also needs the middle and low bands, where outlines and textures are
drawn. For each band [lo, hi) this probe reports, on one fixed batch of held-out subjects (the training
metric batch, with fixed noise and t drawn inside the band), the mean absolute x0 error in grey levels
over the frame and over the subject's own pixels, with the prompt (`text`) and with prompt and demos
(`demos`). Every model sees the same batch, noise and timesteps, so compare models within one run.
This is a diagnosis, not a quality score: the graders of `suti eval auto` are that.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from tools.bench import emit_or_fail

DEFAULT_BANDS = (0, 200, 400, 600, 800, 1000)
KEYS = ("x0_err_text", "x0_err_text_subj", "x0_err_demos", "x0_err_demos_subj")


def parse_bands(text: str, num_train: int = 1000) -> list[tuple[int, int]]:
    """'0,200,400' -> [(0, 200), (200, 400)]; edges must rise strictly inside [0, num_train]."""
    from suti.errors import InputError

    try:
        edges = [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--bands: comma-separated integers expected, got {text!r}") from None
    if len(edges) < 2 or edges[0] < 0 or edges[-1] > num_train or any(b <= a for a, b in zip(edges, edges[1:])):
        raise InputError(f"--bands: at least two strictly rising edges in [0, {num_train}] expected, got {text!r}")
    return list(zip(edges, edges[1:]))


def band_errors(model_dir: str, bands: list[tuple[int, int]], subjects: int = 8, batch: int = 32) -> dict:
    """{"lo-hi": {x0_err_text, x0_err_text_subj, x0_err_demos, x0_err_demos_subj}} for one model."""
    from suti.errors import InputError
    from suti.pipeline import SuTIPipeline
    from suti.train.model import TrainModule
    from suti.train.recipe import load_recipe
    from suti.train.validate import conditioning_metrics, metric_batch

    if not (Path(model_dir) / "model_index.json").is_file():
        raise InputError(f"model directory {model_dir} not found (no model_index.json)")
    pipe = SuTIPipeline.from_pretrained(model_dir)  # fp16 files, float32 compute
    recipe = load_recipe("apprentice")
    recipe = replace(recipe, validation=replace(recipe.validation, num_subjects=subjects, metric_batch=batch))
    if pipe.subject is None:
        recipe = replace(recipe, kind="base")
    module = TrainModule(pipe, recipe)
    data = metric_batch(recipe, lambda texts: pipe.tokenize(texts).input_ids, pipe.image_size)
    out = {}
    for lo, hi in bands:
        metrics = conditioning_metrics(module, data, recipe, t_range=(lo, hi))
        out[f"{lo}-{hi}"] = {k: metrics[k] for k in KEYS if k in metrics}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.denoise_bands", description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="SuTIPipeline dir (repeat to compare).")
    p.add_argument("--out", type=Path, help="JSON file to write (default: print only).")
    p.add_argument("--bands", default=",".join(map(str, DEFAULT_BANDS)), help="Band edges of t, comma-separated.")
    p.add_argument("--subjects", type=int, default=8, help="Held-out subjects in the batch.")
    p.add_argument("--batch", type=int, default=32, help="Frames in the batch (per band).")
    args = p.parse_args(argv)
    from suti.errors import InputError

    def compute() -> dict:
        if args.subjects < 1 or args.batch < 1:
            raise InputError(f"--subjects and --batch must be >= 1, got {args.subjects} and {args.batch}")
        bands = parse_bands(args.bands)
        return {"bands": [f"{lo}-{hi}" for lo, hi in bands], "subjects": args.subjects, "batch": args.batch,
                "models": {m: band_errors(m, bands, args.subjects, args.batch) for m in args.model}}

    return emit_or_fail(compute, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
