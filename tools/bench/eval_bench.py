"""Cost of world DreamBench: the quick run measured, the full run extrapolated (generation + grading).

    python -m tools.bench.eval_bench --out bench_eval.json [--model DIR]

Without --model a random-init `world` preset pipeline stands in for a trained one (same cost per
image: sampling cost does not depend on the weights). Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def measure(model_dir: Path, work: Path) -> dict:
    from suti.eval.benchmark import QUICK, BenchmarkConfig, build_benchmark
    from suti.eval.graders import Graders
    from suti.eval.runner import run_benchmark
    from suti.eval.systems import resolve_system

    quick = build_benchmark(QUICK)
    systems = [resolve_system(s, quick) for s in ("gt", "copy", f"base:{model_dir}", f"suti:{model_dir}")]
    t = time.perf_counter()
    graders = Graders.load()
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    results = run_benchmark(quick, systems, work / "quick", graders, progress=False)
    quick_s = time.perf_counter() - t
    per_image = {n: s["run"]["seconds_per_image"] for n, s in results["systems"].items()}
    generation_s = sum(s["run"]["seconds"] for s in results["systems"].values())
    grade_per_image = max(0.0, quick_s - generation_s) / (len(quick.items) * len(systems))
    full = BenchmarkConfig()
    n_full = full.subjects * full.prompts_per_skill * 5 * full.images_per_prompt
    # the full run uses 50 sampler steps, the quick one 25: pipeline cost scales with steps
    scale = {n: (full.steps / QUICK.steps if n in ("base", "suti") else 1.0) for n in per_image}
    return {
        "quick": {"items": len(quick.items), "systems": list(per_image), "seconds_total": round(quick_s, 1),
                  "grader_load_seconds": round(load_s, 1), "seconds_per_image": per_image,
                  "grading_seconds_per_image": round(grade_per_image, 4)},
        "full_estimate": {"items": n_full, "seconds_per_system": {n: round(v * scale[n] * n_full, 0)
                                                                  for n, v in per_image.items()},
                          "grading_seconds_per_system": round(grade_per_image * n_full, 0)},
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "note": "wall-clock timings; pipelines at the world preset, 32 px, DDIM",
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_eval.json"))
    parser.add_argument("--model", type=Path, default=None, help="A SuTIPipeline dir (default: random-init world)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            from suti.pipeline import SuTIPipeline

            model = work / "world-random"
            SuTIPipeline.from_config("world").save_pretrained(str(model))
        report = measure(model, work)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
