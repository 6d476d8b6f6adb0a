"""One table over several EVAL_DIRs: a system's scores (with 95 % CIs) next to each run's sampler settings.

    python -m tools.bench.eval_table out/sg/r22_sg1 out/sg/r22_sg3 --system suti \
        --out bench/sampler_sweep_r22.json

For sweeps where every EVAL_DIR ran the same system under different benchmark settings (sampler,
steps, guidance, subject guidance: each is part of the benchmark fingerprint, so each has its own
EVAL_DIR). Rows keep the order given; each records the settings that differ between rows, the item
count and the scores. The EVAL_DIRs must share subjects, prompts and seeds (the same items), else the
rows would not be comparable and the command says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.bench import emit_or_fail
from tools.bench.dreambooth_sweep import METRICS, _results

SETTINGS = ("sampler", "steps", "guidance_scale", "subject_guidance_scale")
SAME = ("subjects", "prompts_per_skill", "images_per_prompt", "demo_size", "world_seed", "demos")


def table(eval_dirs: list[Path], system: str) -> dict:
    from suti.errors import InputError

    rows, first = [], None
    for d in eval_dirs:
        res = _results(d)
        cfg = res["benchmark"]["config"]
        same = {k: cfg.get(k) for k in SAME}
        if first is None:
            first = same
        elif same != first:
            raise InputError(f"{d}: benchmark items differ from {eval_dirs[0]} ({same} vs {first}); "
                             "rows would not be comparable")  # fmt: skip
        if system not in res["systems"]:
            raise InputError(f"{d}: no system {system!r} (has {sorted(res['systems'])})")
        scores = res["systems"][system]
        rows.append({"eval_dir": d.as_posix(), **{k: cfg.get(k) for k in SETTINGS},
                     "items": res["benchmark"]["items"],
                     **{m: {"mean": round(scores[m]["mean"], 4), "ci": [round(c, 4) for c in scores[m]["ci"]]}
                        for m in METRICS if isinstance(scores.get(m), dict) and scores[m].get("mean") is not None}})  # fmt: skip
    return {"system": system, "benchmark": first, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.eval_table", description=__doc__.split("\n")[0])
    ap.add_argument("eval_dirs", nargs="+", type=Path)
    ap.add_argument("--system", required=True, help="system name as in results.json (e.g. suti)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    return emit_or_fail(lambda: table(args.eval_dirs, args.system), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
