"""P5 load benchmark of `suti serve` on loopback: throughput and latency with and without micro-batching,
then saturation (429s, no crash).

    python -m tools.bench.serve_bench --out bench/serve.json [--model world] [--requests 200]
                                      [--concurrency 8] [--steps 10] [--threads 2] [--modes batched,...]

Each mode starts its own server process (`python -m tools.serve ... --host 127.0.0.1`), registers one
subject, warms up, then sends `--requests` generations from `--concurrency` client threads, each with its
own seed. The server only ever binds 127.0.0.1. Timings are wall-clock on whatever else the machine is
doing (the load average is recorded): compare the modes of ONE run, not runs of different days.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"  # loopback only, by design
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m tools.serve` in a child process on a free loopback port."""

    def __init__(self, model: str, threads: int, max_batch: int, queue_size: int, max_wait_ms: float, steps: int,
                 timeout_s: float):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.args = [sys.executable, "-m", "tools.serve", "--model", model, "--host", HOST, "--port", str(self.port),
                     "--threads", str(threads), "--max-batch", str(max_batch), "--queue-size", str(queue_size),
                     "--max-wait-ms", str(max_wait_ms), "--max-steps", str(max(steps, 1)),
                     "--default-steps", str(max(steps, 1)), "--timeout", str(timeout_s)]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        import httpx

        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        until = time.monotonic() + 300
        while time.monotonic() < until:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready in 300 s")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def reference_images(n: int = 3) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def fire(url: str, subject_id: str, count: int, concurrency: int, steps: int, seed0: int) -> dict:
    """`count` generations from `concurrency` threads; latency percentiles over the successes."""
    import httpx

    def one(i: int, client: httpx.Client) -> tuple[int, float, int]:
        start = time.perf_counter()
        try:
            r = client.post("/v1/generations", json={"subject_id": subject_id, "prompt": "a red circle on the beach",
                                                     "steps": steps, "seed": seed0 + i})
        except httpx.HTTPError:  # counted as an error (status 0), never a crash of the benchmark
            return 0, time.perf_counter() - start, 0
        batch = r.json().get("batch_images", 0) if r.status_code == 200 else 0
        return r.status_code, time.perf_counter() - start, batch

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, timeout=600, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        results = list(pool.map(lambda i: one(i, client), range(count)))
        wall = time.perf_counter() - start
    codes = [c for c, _, _ in results]
    lat = np.array([t for c, t, _ in results if c == 200]) * 1000
    batches = [b for c, _, b in results if c == 200]
    pct = (lambda q: round(float(np.percentile(lat, q)), 1)) if len(lat) else (lambda q: None)
    counts = {str(c): codes.count(c) for c in sorted(set(codes))}  # 0 = connection error
    return {"requests": count, "concurrency": concurrency, "status_counts": counts, "ok": codes.count(200),
            "status_429": codes.count(429),
            "errors": sum(1 for c in codes if c not in (200, 429)), "wall_s": round(wall, 2),
            "req_per_s": round(codes.count(200) / wall, 3), "latency_ms": {"p50": pct(50), "p90": pct(90),
                                                                           "p99": pct(99)},
            "mean_batch_images_seen": round(float(np.mean(batches)), 2) if batches else None}


def run_mode(name: str, args, max_batch: int, queue_size: int) -> dict:
    import httpx

    print(f"[{name}] starting server (max_batch={max_batch}, queue_size={queue_size})", flush=True)
    with ServerProcess(args.model, args.threads, max_batch, queue_size, args.max_wait_ms, args.steps,
                       args.timeout) as server:
        files = [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(reference_images())]
        subject = httpx.post(server.url + "/v1/subjects", files=files, timeout=120).json()["subject_id"]
        fire(server.url, subject, args.concurrency, args.concurrency, args.steps, 10_000)  # warm-up
        rss0 = server.rss_mb()
        if name == "saturation":
            out = fire(server.url, subject, args.burst, args.burst, args.steps, 0)
        else:
            out = fire(server.url, subject, args.requests, args.concurrency, args.steps, 0)
        stats = httpx.get(server.url + "/v1/stats", timeout=30).json()
        out["healthz_after"] = httpx.get(server.url + "/healthz", timeout=30).status_code
        time.sleep(0.5)
        out["readyz_after"] = httpx.get(server.url + "/readyz", timeout=30).status_code
        out["server"] = {"max_batch": max_batch, "queue_size": queue_size, "max_wait_ms": args.max_wait_ms,
                         "timeout_s": args.timeout,
                         "batches": stats["queue"]["batches"], "mean_batch_images": stats["queue"]["mean_batch_images"],
                         "demo_encoder_calls": stats["runner"]["demo_encoder_calls"],
                         "rss_mb_before": round(rss0, 1), "rss_mb_after": round(server.rss_mb(), 1)}
        print(f"[{name}] {json.dumps(out)}", flush=True)
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write.")
    p.add_argument("--model", default="world", help="Model dir or preset (random weights: same compute).")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="Denoising steps per request.")
    p.add_argument("--threads", type=int, default=2, help="torch threads in the server.")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-wait-ms", type=float, default=25.0)
    p.add_argument("--burst", type=int, default=64, help="Simultaneous requests in the saturation run.")
    p.add_argument("--saturation-queue", type=int, default=16, help="Queue size in the saturation run.")
    p.add_argument("--timeout", type=float, default=120.0, help="Server per-request timeout (s).")
    p.add_argument("--modes", default="batched,unbatched,saturation", help="Comma-separated subset to run.")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"batched", "unbatched", "saturation"}
    if unknown:
        p.error(f"unknown modes: {sorted(unknown)}")

    load0 = os.getloadavg()
    result = {"benchmark": "serve P5", "model": args.model, "steps": args.steps, "host": HOST,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_before": load0},
              "modes": {}}
    plan = {"batched": (args.max_batch, max(64, args.concurrency * 2)), "unbatched": (1, max(64, args.concurrency * 2)),
            "saturation": (args.max_batch, args.saturation_queue)}
    for mode in modes:
        result["modes"][mode] = run_mode(mode, args, *plan[mode])
    b = result["modes"].get("batched", {}).get("req_per_s")
    u = result["modes"].get("unbatched", {}).get("req_per_s")
    result["speedup_batched_vs_unbatched"] = round(b / u, 3) if b and u else None
    result["machine"]["load_avg_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}: batched {b} req/s, unbatched {u} req/s, "
          f"speedup {result['speedup_batched_vs_unbatched']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
