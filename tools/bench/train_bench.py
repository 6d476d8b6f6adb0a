"""Training benchmark: 2-process vs 1-process apprentice throughput (P6) and the cost of a new subject (P1).

    python -m tools.bench.train_bench --out bench/train.json [--parts p1,p6] [--model models/world]

P6  `python -m tools.train apprentice --config R` (1 process, --threads torch threads) against
    `accelerate launch --multi_gpu --num_processes 2 -m tools.train apprentice --config R` (--threads / 2
    each), same recipe and --steps-p6, each into a fresh run dir, interleaved 1, 2, 1, 2, ...
    Throughput comes from the loop's own RUN/log.jsonl: steps between the first and the last logged step
    over the `elapsed_s` between them (start-up, the first log_every steps and the final validation /
    grid / checkpoint are excluded). loop.batch_size is per process: every process renders its own
    batch and DDP averages the gradients, so 2 processes train on 2x the samples per optimizer step.
P1  (a) SuTI: `pipe.encode_subject(photos)` of a held-out subject (median of --repeats) against
    DreamBooth: `tools.train dreambooth --config R --init-from MODEL --subject ID --max-steps S` in a
    subprocess, timed by the loop's own `elapsed_s` at its last step (training only). Target >= 1000.
    (b) time to first image, same DDIM sampler and --steps: SuTI = encode + sample one image;
    DreamBooth = fine-tune + load the fine-tuned model + sample one image. Target >= 30.
    Both sample with the pipeline's default guidance. The DreamBooth step count is --dreambooth-steps,
    or the peak of a step-count sweep (--steps-from FILE, written by tools.bench.dreambooth_sweep; the
    sweep must have fine-tuned --model), or else the recipe's own max_steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("p1", "p6")
TARGETS = {"P1a_dreambooth_finetune_over_suti_encode": 1000.0, "P1b_dreambooth_first_image_over_suti_first_image": 30.0}


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def _run(cmd: list[str], threads: int, what: str) -> dict:
    """Run a command from the repo root; wall seconds and CPU seconds of it and all its descendants."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": cmd, "command_wall_s": round(wall, 3), "command_cpu_s": round(cpu, 3)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def work_between(loop: dict, lo: int, hi: int) -> dict[str, int]:
    """Validations and checkpoints the loop runs after the log lines of steps lo..hi-1 (inside that window)."""
    count = lambda every: (hi - 1) // every - (lo - 1) // every if every else 0  # noqa: E731
    return {"validations": count(loop.get("validate_every", 0)), "checkpoints": count(loop.get("checkpoint_every", 0))}


def read_throughput(run: str | Path) -> dict:
    """Samples/s of a finished run from what the loop wrote: the log.jsonl intervals free of validation and
    checkpoint work (all intervals if none is), else summary.json (which includes start-up and the end)."""
    run = Path(run)
    rows, summary = _log_rows(run), json.loads((run / "summary.json").read_text())
    loop = json.loads((run / "recipe.json").read_text())["loop"]
    procs, accum = int(summary["processes"]), loop.get("grad_accum", 1)
    per_step = loop["batch_size"] * accum * procs  # samples per optimizer step over all processes
    pairs = [(a, b) for a, b in zip(rows, rows[1:]) if b["elapsed_s"] > a["elapsed_s"]]
    clean = [(a, b) for a, b in pairs if not any(work_between(loop, a["step"], b["step"]).values())]
    use = clean or pairs
    cpu_per_step, inside = None, {"validations": 0, "checkpoints": 0}
    if use:
        steps = sum(b["step"] - a["step"] for a, b in use)
        steps_per_s = steps / sum(b["elapsed_s"] - a["elapsed_s"] for a, b in use)
        cpu_per_step = sum(b["cpu_s"] - a["cpu_s"] for a, b in use) / steps
        for a, b in use:
            inside = {k: inside[k] + v for k, v in work_between(loop, a["step"], b["step"]).items()}
        source = f"log.jsonl: {len(use)} of {len(rows) - 1} intervals, {steps} steps, from step {use[0][0]['step']}"
    else:  # a single log line (or elapsed_s rounded to the same 0.1 s)
        steps_per_s, source = float(summary["steps_per_s"]), "summary.json"
    return {"processes": procs, "batch_per_process": loop["batch_size"], "grad_accum": accum,
            "samples_per_step": per_step, "steps_per_s": round(steps_per_s, 4),
            "samples_per_s": round(steps_per_s * per_step, 3), "source": source, "window_includes": inside,
            "main_process_cpu_s_per_step": None if cpu_per_step is None else round(cpu_per_step, 3),
            "summary": {k: summary[k] for k in ("step", "steps_per_s", "samples_per_s", "processes")},
            "log": rows}


def run_p6(recipe: str, steps: int, threads: int, repeats: int, tmp: Path) -> dict:
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    each = max(threads // 2, 1)
    train = ["-m", "tools.train", "apprentice", "--config", recipe, "--max-steps", str(steps), "--no-progress"]
    runs: dict[str, list[dict]] = {"1": [], "2": []}
    for r in range(repeats):
        for n in ("1", "2"):
            out = tmp / f"p6_{n}proc_{r}"
            if n == "1":
                cmd, t = [sys.executable, *train, "--out", str(out)], threads
            else:
                cmd, t = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process",
                          str(each), "--main_process_port", str(_free_port()), *train, "--out", str(out)], each
            info = _run(cmd, t, f"P6 {n}-process run")
            runs[n].append({**info, "threads_per_process": t, **read_throughput(out)})
            shutil.rmtree(out, ignore_errors=True)
    med = {n: statistics.median(x["samples_per_s"] for x in v) for n, v in runs.items()}
    return {
        "recipe": recipe, "steps": steps, "repeats": repeats,
        "threads_per_process": {"1_process": threads, "2_processes": each},
        "median_samples_per_s": {"1_process": med["1"], "2_processes": med["2"]},
        "ratio_2proc_over_1proc_samples_per_s": round(med["2"] / max(med["1"], 1e-12), 3),
        "runs": runs,
        "notes": ("Throughput = logged steps / elapsed_s over the RUN/log.jsonl intervals (one per log_every "
                  "steps, after the first logged step, so start-up and warm-up are out) that hold no validation "
                  "or checkpoint (window_includes counts any that could not be avoided). Lines are written by the "
                  "main process after a cross-process reduce, so processes are in step; elapsed_s is rounded to "
                  "0.1 s. loop.batch_size is PER PROCESS and is not split: each process renders its own batch "
                  "(the process index is in the data seed) and DDP averages the gradients, so 2 processes train "
                  "on 2x batch_size samples per optimizer step at the same lr; samples/s counts all processes. "
                  "main_process_cpu_s_per_step is the main process only."),
    }  # fmt: skip


def _subject_photos(recipe, subject_id: int, n: int, size: int):
    import numpy as np

    from suti.train.data import dreambooth_photos
    from suti.world import SKILLS, caption, for_skill, make_subject

    ws = recipe.world.world_seed
    subject = make_subject(subject_id, ws)
    photos = dreambooth_photos(subject, subject_id, n, ws, size)  # the same photos DreamBooth trains on
    rng = np.random.default_rng([ws, subject_id, 0xBE])
    prompt = caption(subject, for_skill(SKILLS[0], rng, subject), rng)  # a new context (recontextualization)
    return [im for im, _ in photos], [c for _, c in photos], prompt


def _timed(fn) -> tuple[float, float, object]:
    w0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - w0, time.process_time() - c0, value


def run_p1(model: Path, db_recipe: str, subject_id: int | None, n_demos: int, db_steps: int | None,
           sample_steps: int, repeats: int, threads: int, tmp: Path, peak: dict | None = None) -> dict:
    """`peak`: the `peak` entry of a DreamBooth sweep (tools.bench.dreambooth_sweep) that chose db_steps."""
    import inspect

    import torch
    from diffusers import DDIMScheduler

    from suti.pipeline.registry import load_pipeline
    from suti.train.data import subjects_of_split
    from suti.train.recipe import load_recipe

    torch.set_num_threads(threads)
    recipe = load_recipe(db_recipe)
    if subject_id is None:
        subject_id = subjects_of_split("test_subject", 200, recipe.world.world_seed)[0]
    steps = db_steps or recipe.loop.max_steps

    def prepare(pipe):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # same sampler on both sides
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sample(pipe, prompt, **kw):
        return pipe(prompt, num_inference_steps=sample_steps, guidance_scale=gs,
                    generator=torch.Generator().manual_seed(0), output_type="np", **kw)

    pipe = prepare(load_pipeline(str(model)))
    defaults = inspect.signature(type(pipe).__call__).parameters  # what a user gets without flags
    gs, ss = defaults["guidance_scale"].default, defaults["subject_guidance_scale"].default
    images, captions, prompt = _subject_photos(recipe, subject_id, n_demos, pipe.image_size)
    first_encode = _timed(lambda: pipe.encode_subject(images, captions))[0]
    ctx = pipe.encode_subject(images, captions)
    first_sample = _timed(lambda: sample(pipe, prompt, subject_embeds=ctx, subject_guidance_scale=ss))[0]
    enc, samp = [], []
    for _ in range(repeats):  # interleaved: encode, sample with that encoding
        w, c, ctx = _timed(lambda: pipe.encode_subject(images, captions))
        enc.append((w, c))
        w, c, _ = _timed(lambda: sample(pipe, prompt, subject_embeds=ctx, subject_guidance_scale=ss))
        samp.append((w, c))
    suti = {"encode_s": statistics.median(w for w, _ in enc), "encode_cpu_s": statistics.median(c for _, c in enc),
            "sample_s": statistics.median(w for w, _ in samp), "sample_cpu_s": statistics.median(c for _, c in samp),
            "first_call_encode_s": round(first_encode, 4), "first_call_sample_s": round(first_sample, 4),
            "encode_s_all": [round(w, 5) for w, _ in enc], "sample_s_all": [round(w, 4) for w, _ in samp]}
    suti["first_image_s"] = suti["encode_s"] + suti["sample_s"]
    del pipe

    out = tmp / "dreambooth_run"
    cmd = [sys.executable, "-m", "tools.train", "dreambooth", "--config", db_recipe, "--init-from", str(model),
           "--subject", str(subject_id), "--max-steps", str(steps), "--out", str(out), "--no-progress"]
    info = _run(cmd, threads, "DreamBooth fine-tune")
    last = _log_rows(out)[-1]
    db = {**info, "steps": steps, "finetune_s": float(last["elapsed_s"]), "finetune_cpu_s": float(last["cpu_s"]),
          "finetune_s_includes": work_between(json.loads((out / "recipe.json").read_text())["loop"], 1, steps)}
    load_w, _, db_pipe = _timed(lambda: prepare(load_pipeline(str(out / "model"))))
    db_prompt = f"{recipe.dreambooth.identifier} {prompt}"
    db["load_s"] = round(load_w, 4)
    db["first_call_sample_s"] = round(_timed(lambda: sample(db_pipe, db_prompt))[0], 4)
    db_samp = [_timed(lambda: sample(db_pipe, db_prompt))[:2] for _ in range(repeats)]
    db["sample_s"] = statistics.median(w for w, _ in db_samp)
    db["sample_cpu_s"] = statistics.median(c for _, c in db_samp)
    db["first_image_s"] = db["finetune_s"] + db["load_s"] + db["sample_s"]
    db["first_image_s_with_command_wall"] = info["command_wall_s"] + db["load_s"] + db["sample_s"]
    ratios = {"P1a_dreambooth_finetune_over_suti_encode": db["finetune_s"] / suti["encode_s"],
              "P1b_dreambooth_first_image_over_suti_first_image": db["first_image_s"] / suti["first_image_s"]}
    wide = {"P1a_dreambooth_finetune_over_suti_encode": info["command_wall_s"] / suti["encode_s"],
            "P1b_dreambooth_first_image_over_suti_first_image": db["first_image_s_with_command_wall"]
            / suti["first_image_s"]}
    cpu = {"P1a_dreambooth_finetune_over_suti_encode": db["finetune_cpu_s"] / max(suti["encode_cpu_s"], 1e-9)}
    rnd = lambda d: {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}  # noqa: E731
    return {
        "model": str(model), "dreambooth_recipe": db_recipe, "subject_id": subject_id, "subject_split": "test_subject",
        "demos": n_demos, "dreambooth_photos": recipe.dreambooth.num_photos, "prompt": prompt,
        "dreambooth_prompt": db_prompt, "sampler": "DDIMScheduler", "sample_steps": sample_steps,
        "guidance": {"suti": {"guidance_scale": gs, "subject_guidance_scale": ss, "unet_passes": 3 if ss != gs else 2},
                     "dreambooth": {"guidance_scale": gs, "unet_passes": 2}},
        "repeats": repeats, "torch_threads": threads,
        "dreambooth_steps": steps,
        "dreambooth_steps_source": ("the peak of a DreamBooth sweep (--steps-from)" if peak else
                                    "the --dreambooth-steps flag" if db_steps else
                                    f"the recipe's own loop.max_steps ({db_recipe!r})"),
        "dreambooth_steps_note": (f"The step count at which DreamBooth's world-DreamBench {peak['metric']} peaks in the "
                                  f"sweep given (peak_at_edge={peak['peak_at_edge']})." if peak else
                                  "This step count is NOT the step at which DreamBooth's world-DreamBench score "
                                  "peaks: that has not been measured. The ratios hold for this step count only."),
        **({"dreambooth_sweep_peak": peak} if peak else {}),
        "suti": rnd(suti), "dreambooth": rnd(db),
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
        "ratios_with_command_wall": {k: round(v, 2) for k, v in wide.items()},
        "cpu_ratios": {k: round(v, 2) for k, v in cpu.items()},
        "targets": TARGETS, "targets_met": {k: ratios[k] >= t for k, t in TARGETS.items()},
        "notes": ("finetune_s = the loop's elapsed_s at its last logged step (log.jsonl): training steps plus "
                  "the recipe's periodic validations / checkpoints before the last step (finetune_s_includes), "
                  "without process start-up, model loading and the final validation / grid / checkpoint / export "
                  "(those are in command_wall_s and in ratios_with_command_wall). SuTI times are medians of warm "
                  "calls on an already loaded pipeline; DreamBooth load_s is one load of its exported model, "
                  "sample_s a median of warm calls."),
    }  # fmt: skip


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if not parts or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(PARTS)}, got {text!r}")
    return tuple(p for p in PARTS if p in parts)


def _check(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from suti.errors import ConfigError
    from suti.train.recipe import load_recipe

    for flag, name, kind in (("--recipe", args.recipe, "apprentice"), ("--dreambooth-recipe", args.dreambooth_recipe,
                                                                        "dreambooth")):
        if ("p6" if kind == "apprentice" else "p1") not in args.parts:
            continue
        try:
            recipe = load_recipe(name)
        except ConfigError as e:
            ap.error(f"{flag}: {e}")
        if recipe.kind != kind:
            ap.error(f"{flag}: recipe {name!r} is a {recipe.kind!r} recipe, not {kind!r}")
        if kind == "apprentice" and args.steps_p6 < 2 * recipe.loop.log_every:
            ap.error(f"--steps-p6 must be >= 2 * loop.log_every = {2 * recipe.loop.log_every} for recipe {name!r} "
                     "(throughput is read between the first and the last log.jsonl line)")
    if "p1" in args.parts and not (args.model / "model_index.json").is_file():
        ap.error(f"--model: {str(args.model)!r} is not a saved pipeline directory (no model_index.json)")
    if not 3 <= args.demos <= 5:
        ap.error(f"--demos must be in 3..5, got {args.demos}")
    args.peak = None
    if args.steps_from is not None:
        if args.dreambooth_steps is not None:
            ap.error("--steps-from and --dreambooth-steps both set the DreamBooth step count: give one")
        try:
            sweep = json.loads(args.steps_from.read_text())
            peak, base = sweep["peak"], sweep["base"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            ap.error(f"--steps-from: {str(args.steps_from)!r} is not a DreamBooth sweep JSON ({e})")
        if (ROOT / base).resolve() != args.model:
            ap.error(f"--steps-from: the sweep fine-tuned {base!r}, not --model {str(args.model)!r}")
        args.dreambooth_steps = int(peak["steps"])
        args.peak = {"file": args.steps_from.name, "metric": sweep["metric"], **peak}


def _portable(value, tmp: str):
    """The result with this machine's paths replaced: the repo by ".", the temp dir by "<tmp>", the
    interpreter by "python", so the JSON can be committed."""
    if isinstance(value, dict):
        return {k: _portable(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, tmp) for v in value]
    if isinstance(value, str):
        if value == sys.executable:
            return "python"
        return value.replace(str(tmp), "<tmp>").replace(str(ROOT), ".")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.train_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--parts", type=_parts, default=PARTS, help="comma-separated: p1,p6 (default both)")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "world",
                    help="P1: trained pipeline dir (SuTI model and DreamBooth's --init-from)")
    ap.add_argument("--recipe", default="apprentice", help="P6: apprentice recipe name or JSON")
    ap.add_argument("--steps-p6", type=_positive, default=30, help="P6: optimizer steps per run")
    ap.add_argument("--p6-repeats", type=_positive, default=3, help="P6: runs per process count (median)")
    ap.add_argument("--dreambooth-recipe", default="dreambooth", help="P1: dreambooth recipe name or JSON")
    ap.add_argument("--dreambooth-steps", type=_positive, default=None,
                    help="P1: DreamBooth steps (default: the recipe's own max_steps)")
    ap.add_argument("--steps-from", type=Path, default=None,
                    help="P1: DreamBooth sweep JSON (python -m tools.bench.dreambooth_sweep); use its peak step count")
    ap.add_argument("--subject", type=int, default=None, help="P1: world subject id (default: first held-out)")
    ap.add_argument("--demos", type=int, default=4, help="P1: demos for SuTI's encode_subject (3-5)")
    ap.add_argument("--steps", type=_positive, default=25, help="P1: DDIM sampling steps")
    ap.add_argument("--repeats", type=int, default=5, help="P1: timed calls per measurement (median, >= 5)")
    ap.add_argument("--threads", type=_positive, default=2,
                    help="thread budget: P6 1 process gets all, 2 processes get half each; P1 uses all")
    args = ap.parse_args(argv)
    if args.repeats < 5:
        ap.error(f"--repeats must be >= 5, got {args.repeats}")
    if args.subject is not None and args.subject < 0:
        ap.error(f"--subject must be >= 0, got {args.subject}")
    args.model = args.model.resolve()
    _check(ap, args)

    result: dict = {"parts": list(args.parts), "machine": {
        "python": platform.python_version(), "torch": metadata.version("torch"),
        "accelerate": metadata.version("accelerate"), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()]}}
    w0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="train_bench_") as tmp:
            if "p6" in args.parts:
                result["P6"] = run_p6(args.recipe, args.steps_p6, args.threads, args.p6_repeats, Path(tmp))
            if "p1" in args.parts:
                result["P1"] = run_p1(args.model, args.dreambooth_recipe, args.subject, args.demos,
                                      args.dreambooth_steps, args.steps, args.repeats, args.threads, Path(tmp),
                                      args.peak)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_wall_s"] = round(time.perf_counter() - w0, 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_portable(result, tmp), indent=2) + "\n")
    brief = {"total_wall_s": result["total_wall_s"]}
    if "P6" in result:
        brief["P6"] = {k: result["P6"][k] for k in ("median_samples_per_s", "ratio_2proc_over_1proc_samples_per_s")}
    if "P1" in result:
        brief["P1"] = {k: result["P1"][k] for k in ("dreambooth_steps", "ratios", "ratios_with_command_wall",
                                                    "targets_met")}
    print(json.dumps(brief, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
