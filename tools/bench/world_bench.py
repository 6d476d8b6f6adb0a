"""World benchmark: anti-aliased renders/s (one process and with workers) and dataset build time.

    python -m tools.bench.world_bench --out bench/world.json [--renders 2000] [--workers 2]
                                      [--build-images 10000] [--build-workers 1,2]

Timings are wall-clock on whatever else the machine is doing: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from suti.world import BuildConfig, build_dataset, make_subject, render, sample_context


def _cases(n: int, seed: int = 0) -> list:
    """n random (subject, context) pairs, mixing every skill as a dataset build does."""
    rng = np.random.default_rng(seed)
    subjects = [make_subject(i) for i in range(64)]
    return [(s, sample_context(rng, s)) for s in (subjects[i % 64] for i in range(n))]


def _render_all(args: tuple) -> int:
    cases, size = args
    for subject, context in cases:
        render(subject, context, size)
    return len(cases)


def renders_per_second(n: int, size: int, workers: int) -> float:
    """Steady-state renders/s (backgrounds cached by a warm-up pass in every process)."""
    cases = _cases(n)
    warm = _cases(200, seed=1)
    if workers == 1:
        _render_all((warm, size))
        start = time.perf_counter()
        _render_all((cases, size))
        return n / (time.perf_counter() - start)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
        list(pool.map(_render_all, [(warm, size)] * workers))
        chunks = [(cases[i::workers], size) for i in range(workers)]
        start = time.perf_counter()
        done = sum(pool.map(_render_all, chunks))
        return done / (time.perf_counter() - start)


def build_seconds(images: int, size: int, workers: int, per_cluster: int = 8, noise: float = 0.1) -> dict:
    """Time one full `build_dataset` of about `images` rows into a temporary directory."""
    clusters = max(1, round(images / (per_cluster * (1 + noise))))
    tmp = Path(tempfile.mkdtemp(prefix="world-bench-"))
    try:
        start = time.perf_counter()
        out = build_dataset(tmp / "ds", BuildConfig(clusters, per_cluster, size, 0, noise), workers=workers, progress=False)
        seconds = time.perf_counter() - start
        rows = json.loads((out / "world.json").read_text())["rows"]
        size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"workers": workers, "clusters": clusters, "rows": rows, "size": size, "seconds": round(seconds, 2),
            "rows_per_second": round(rows / seconds, 1), "dataset_mb": round(size_mb, 1)}  # fmt: skip


def machine() -> dict:
    """What the numbers were measured on."""

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_count": os.cpu_count(), "usable_cpus": usable, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "numpy": np.__version__, "pillow": version("pillow"), "torch": version("torch"),
            "datasets": version("datasets"), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.world_bench", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--renders", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2, help="processes for the parallel render measurement")
    p.add_argument("--build-images", type=int, default=10_000, help="0 skips the build measurement")
    p.add_argument("--build-workers", default="2", help="comma-separated worker counts to time the build with")
    args = p.parse_args(argv)

    result = {"machine": machine(), "render": {"size": args.size, "renders": args.renders}}
    result["render"]["single_process_per_s"] = round(renders_per_second(args.renders, args.size, 1), 1)
    if args.workers > 1:
        rate = renders_per_second(args.renders, args.size, args.workers)
        result["render"][f"workers_{args.workers}_per_s"] = round(rate, 1)
    if args.build_images > 0:
        result["build"] = [build_seconds(args.build_images, args.size, int(w)) for w in args.build_workers.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
