"""`suti eval auto` (run systems through world DreamBench) and `suti eval train-graders`: thin wiring."""

from __future__ import annotations

from pathlib import Path

import typer

from suti.errors import InputError
from tools import quiet_library_bars

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command("auto")
def auto(
    out: Path = typer.Option(..., "--out", help="EVAL_DIR to write (items.jsonl, results.json, report.html, PNGs)."),
    system: list[str] = typer.Option(..., "--system", help="gt | copy | base:DIR | suti:DIR[@OPTS] | "
                                     "dreambooth:DIR[@STEPS] | module:callable; NAME=SPEC renames. Repeat for several. "
                                     "OPTS: demos=N, captions=off, demo_timestep=current|T (ablations)."),
    quick: bool = typer.Option(False, "--quick", help="The CI subset: 4 subjects x 5 prompts x 1 seed, 25 steps."),
    subjects: int = typer.Option(None, "--subjects", help="Override the number of held-out subjects (1-200)."),
    split: str = typer.Option("test", "--split", help="test (the benchmark) or validation (other held-out "
                              "subjects, never in a test benchmark: tune sampling settings there)."),
    images_per_prompt: int = typer.Option(None, "--images-per-prompt", help="Override the seeds per prompt."),
    steps: int = typer.Option(None, "--steps", help="Override the sampler step count (same for every system)."),
    sampler: str = typer.Option(None, "--sampler", help="ddim (default), ddpm, euler or dpm."),
    guidance: float = typer.Option(None, "--guidance", help="Override the text guidance scale (default 2)."),
    subject_guidance: float = typer.Option(None, "--subject-guidance",
                                           help="Override the subject (demo) guidance scale (default 2)."),
    demo_size: int = typer.Option(None, "--demo-size", help="Render size of demos and ground truth (default 32)."),
    demos: int = typer.Option(None, "--demos", help="Demos per subject, 1-5, the same for all (default: 3-5 by subject)."),
    weights: Path = typer.Option(None, "--weights", help="Grader weights folder (default: the committed ones)."),
    grade: bool = typer.Option(True, "--grade/--no-grade", help="Score outputs (off: only generate)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Clear an existing EVAL_DIR of another benchmark."),
    resume: bool = typer.Option(False, "--resume", help="Keep the systems' output PNGs already in EVAL_DIR "
                                "(e.g. of a killed run) and generate only the missing ones, then grade all."),
    shard: str = typer.Option(None, "--shard", help="K/N: generate only the K-th of N blocks of subjects, no "
                              "grading (needs --no-grade); copy the shards' outputs/ together and --resume."),
    batch_size: int = typer.Option(25, "--batch-size", help="Items of one subject per sampling call of the pipeline "
                                   "systems (faster; images equal single calls to float rounding); 1 = one per call."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Run systems through the world DreamBench and write EVAL_DIR with scores, CIs and an HTML report."""
    from dataclasses import replace

    from suti.eval.benchmark import QUICK, BenchmarkConfig, build_benchmark
    from suti.eval.runner import run_benchmark
    from suti.eval.systems import resolve_system

    if not progress:
        quiet_library_bars()
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    shard_kn = None
    if shard is not None:
        k, slash, n = shard.partition("/")
        if not (slash and k.strip().isdigit() and n.strip().isdigit()):
            raise InputError(f"--shard must look like K/N (e.g. 2/3), got {shard!r}")
        shard_kn = (int(k), int(n))
        if grade:
            raise InputError("--shard only generates: add --no-grade, then grade the merged EVAL_DIR with --resume")
    cfg = QUICK if quick else BenchmarkConfig()
    overrides = {"subjects": subjects, "images_per_prompt": images_per_prompt, "steps": steps, "sampler": sampler,
                 "demo_size": demo_size, "demos": demos, "guidance_scale": guidance,
                 "subject_guidance_scale": subject_guidance, "split": split}  # fmt: skip
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    bench = build_benchmark(cfg)
    systems = [resolve_system(s, bench) for s in system]
    graders = None
    if grade:
        from suti.eval.clip_world import WEIGHTS_DIR
        from suti.eval.graders import Graders

        graders = Graders.load(weights if weights is not None else WEIGHTS_DIR)
    results = run_benchmark(bench, systems, out, graders, overwrite=overwrite, progress=progress, resume=resume,
                            shard=shard_kn, batch_size=batch_size)  # fmt: skip
    for name, s in results["systems"].items():
        o = s["overall"]
        score = "not graded" if o["mean"] is None else f"overall {o['mean']:.3f} [{o['ci'][0]:.3f}, {o['ci'][1]:.3f}]"
        typer.echo(f"{name}: {score}, {s['failures']} failures of {s['items']} items")
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.html'}")


@app.command("train-graders")
def train_graders(
    out: Path = typer.Option(None, "--out", help="Weights folder (default: suti/eval/weights, the committed one)."),
    tiny: bool = typer.Option(False, "--tiny", help="A few steps on a few subjects (a smoke test, not graders)."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Run the grader validation afterwards."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    parts: str = typer.Option(None, "--parts", help="Comma list of parts to retrain (perception, pose, traits, "
                              "calibration, clip; default all); the others are loaded from the folder."),
) -> None:
    """(Re)train the world CLIP, identity embedding, probes, pose and trait nets and realism model, then validate."""
    import json

    from suti.eval.clip_world import WEIGHTS_DIR
    from suti.eval.train_graders import PARTS, GraderTrainConfig
    from suti.eval.train_graders import train_graders as run

    target = out if out is not None else WEIGHTS_DIR
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a directory")
    chosen = PARTS if parts is None else tuple(p.strip() for p in parts.split(",") if p.strip())
    manifest = run(target, GraderTrainConfig.tiny() if tiny else GraderTrainConfig(), progress, validate, chosen)
    typer.echo(json.dumps({"seconds": manifest["seconds"], "clip_recall_heldout": manifest["clip_recall_heldout"],
                           "validation_all_pass": manifest.get("validation_all_pass")}))  # fmt: skip
    typer.echo(f"wrote grader weights to {target}")


def main(argv: list[str] | None = None) -> int:
    from tools.cli import run_app

    return run_app(app, argv, "suti eval")
