"""Model benchmark: the cost of subject conditioning (P2) and of caching the demo tokens (P3).

    python -m tools.bench.model_bench --out bench/model.json [--preset world | --model models/world]
        [--steps 20] [--repeats 5] [--pool N]

Every configuration samples the same prompt from the same noise with the same UNet, scheduler, step
count and batch; configurations are interleaved within each repeat so that machine noise hits them
alike, and ratios are taken between medians of the same run.

P2  subject 2-pass  = dual guidance with s_subj = s_text: passes e(∅,∅) and e(t,d)   (3 demos)
    text 2-pass     = plain classifier-free guidance: passes e(∅,∅) and e(t,∅)      (no demos)
    dual 3-pass     = dual guidance with s_subj ≠ s_text: e(∅,∅), e(t,∅), e(t,d)
    targets: subject 2-pass / text 2-pass ≤ 1.15; dual 3-pass / text 2-pass ≤ 1.6
P3  re-encoded      = demos run through the UNet's down path again at every step (t = 0), once per
                      step for all guidance passes and images of a prompt
    cached          = demos encoded once per request (the default)
    target: re-encoded / cached ≥ 1.7 at 3 demos (reported for 3-pass and 2-pass guidance)
    The ratio is 1 + E / (P·B·F): E = encoding the demos, P guidance passes, B images, F one UNet
    forward of one image; so it is largest for one image and two passes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from importlib import metadata
from pathlib import Path


def _demos(n: int, size: int):
    from suti.world import Context, make_subject, render

    subject = make_subject(3, seed=0)
    scenes = ["beach", "jungle", "snow", "desert", "grass"]
    return [render(subject, Context(scene=scenes[i % len(scenes)]), size) for i in range(n)]


def _configs(demos: list, captions: list[str], s_text: float) -> dict[str, dict]:
    subj = dict(subject_images=demos, subject_captions=captions)
    return {
        "text_2pass": dict(guidance_scale=s_text),
        "subject_2pass": dict(guidance_scale=s_text, subject_guidance_scale=s_text, **subj),
        "subject_2pass_reencoded": dict(guidance_scale=s_text, subject_guidance_scale=s_text, reencode_demos=True,
                                        **subj),
        "dual_3pass": dict(guidance_scale=s_text, subject_guidance_scale=s_text / 2, **subj),
        "dual_3pass_reencoded": dict(guidance_scale=s_text, subject_guidance_scale=s_text / 2,
                                     reencode_demos=True, **subj),
    }


def run(preset: str, steps: int, repeats: int, batch: int, n_demos: int, threads: int | None,
        model: str | None = None, pool: int | None = None) -> dict:  # fmt: skip
    """Time every configuration on a preset (random weights, gates set to 0.5) or a saved `model` dir;
    `pool` average-pools each demo feature level to pool x pool tokens (None: the model's own layout)."""
    import numpy as np
    import torch

    from suti.pipeline import SuTIPipeline
    from suti.world import Context, caption, make_subject

    if threads:
        torch.set_num_threads(threads)
    if model is not None:
        from suti.pipeline.registry import load_pipeline

        pipe = load_pipeline(model)  # its own layout (levels, blocks, places) and trained gates
    else:
        pipe = SuTIPipeline.from_config(preset)
        pipe.subject.set_gates(0.5)  # a trained-looking gate; timing does not depend on its value
    if pool is not None:
        pipe.subject.set_pool_size(pool)
    pipe.set_progress_bar_config(disable=True)
    demos = _demos(n_demos, pipe.image_size)
    rng = np.random.default_rng(0)
    captions = [caption(make_subject(3, seed=0), Context(scene="beach"), rng) for _ in demos]
    configs = _configs(demos, captions, s_text=5.0)

    def once(kw: dict) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one request."""
        w0, c0 = time.perf_counter(), time.process_time()
        pipe("a circle on the beach", num_images_per_prompt=batch, num_inference_steps=steps,
             generator=torch.Generator().manual_seed(0), output_type="np", **kw)
        return time.perf_counter() - w0, time.process_time() - c0

    for kw in configs.values():  # warm-up (allocator, kernels)
        once(kw)
    times: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(repeats):
        for name, kw in configs.items():
            wall, used = once(kw)
            times[name].append(wall)
            cpu[name].append(used)
    med = {name: statistics.median(v) for name, v in times.items()}
    med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    # Ratios of CPU time: with one torch thread it is the work done, and it stays meaningful when other
    # jobs share the machine (wall-clock ratios are reported too; on an idle machine the two agree).
    base = med_cpu if threads == 1 else med
    ratios = {
        "P2_subject_2pass_over_text_2pass": base["subject_2pass"] / base["text_2pass"],
        "P2_dual_3pass_over_text_2pass": base["dual_3pass"] / base["text_2pass"],
        "P3_reencoded_over_cached": base["dual_3pass_reencoded"] / base["dual_3pass"],
        "P3_reencoded_over_cached_2pass": base["subject_2pass_reencoded"] / base["subject_2pass"],
    }
    wall_ratios = {
        "P2_subject_2pass_over_text_2pass": med["subject_2pass"] / med["text_2pass"],
        "P2_dual_3pass_over_text_2pass": med["dual_3pass"] / med["text_2pass"],
        "P3_reencoded_over_cached": med["dual_3pass_reencoded"] / med["dual_3pass"],
        "P3_reencoded_over_cached_2pass": med["subject_2pass_reencoded"] / med["subject_2pass"],
    }
    targets = {"P2_subject_2pass_over_text_2pass": ("<=", 1.15), "P2_dual_3pass_over_text_2pass": ("<=", 1.6),
               "P3_reencoded_over_cached": (">=", 1.7), "P3_reencoded_over_cached_2pass": (">=", 1.7)}
    return {
        "preset": None if model else preset, "model": model, "image_size": pipe.image_size, "steps": steps,
        "batch": batch, "demos": n_demos, "demo_pool_size": pipe.subject.config.pool_size,
        "demo_tokens_per_demo": pipe.subject.demo_encoder.tokens_per_demo(pipe.unet, 0),
        "repeats": repeats, "torch_threads": torch.get_num_threads(),
        "unet_params_m": round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 2),
        "seconds": {name: [round(x, 4) for x in v] for name, v in times.items()},
        "cpu_seconds": {name: [round(x, 4) for x in v] for name, v in cpu.items()},
        "median_seconds": {k: round(v, 4) for k, v in med.items()},
        "median_cpu_seconds": {k: round(v, 4) for k, v in med_cpu.items()},
        "ratios_from": "cpu_seconds" if threads == 1 else "wall_seconds",
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "wall_ratios": {k: round(v, 3) for k, v in wall_ratios.items()},
        "targets_met": {k: (ratios[k] <= t if op == "<=" else ratios[k] >= t) for k, (op, t) in targets.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.model_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--preset", default="world", help="model preset (random weights: timing only)")
    ap.add_argument("--model", default=None, help="a saved pipeline dir instead (e.g. models/world, the bundled one)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (median taken)")
    ap.add_argument("--batch", type=int, default=4, help="images per request")
    ap.add_argument("--demos", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; with 1 (default) ratios use CPU time, robust to other jobs")
    ap.add_argument("--pool", type=int, default=None,
                    help="average-pool each demo feature level to N x N tokens (default: the model's layout)")
    args = ap.parse_args(argv)
    if args.repeats < 5 or args.steps < 1 or args.batch < 1 or not 1 <= args.demos <= 8:
        ap.error("need --repeats >= 5, --steps >= 1, --batch >= 1 and 1 <= --demos <= 8")
    if args.pool is not None and args.pool < 1:
        ap.error(f"--pool must be >= 1, got {args.pool}")
    if args.model is not None and not (Path(args.model) / "model_index.json").is_file():
        ap.error(f"--model {args.model} is not a saved SuTIPipeline directory (no model_index.json)")
    result = run(args.preset, args.steps, args.repeats, args.batch, args.demos, args.threads, args.model,
                 args.pool)
    result["machine"] = {"python": platform.python_version(), "torch": metadata.version("torch"),
                         "cpu_count": os.cpu_count(), "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"median_seconds": result["median_seconds"], "median_cpu_seconds": result["median_cpu_seconds"],
                      "ratios_from": result["ratios_from"], "ratios": result["ratios"], "wall_ratios": result["wall_ratios"],
                      "targets_met": result["targets_met"], "peak_rss_mb": result["peak_rss_mb"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
