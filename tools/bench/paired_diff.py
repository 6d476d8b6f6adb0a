"""Paired difference between EVAL_DIRs of the same prompts: is setting B better than setting A?

    python -m tools.bench.paired_diff out/val_g3 out/val_g2 out/val_g1.5 [--system suti] \
        --out bench/val_guidance.json

    python -m tools.bench.paired_diff out/db out/suti --baseline-system dreambooth --system suti

The first EVAL_DIR is the baseline (its system: --baseline-system, default the same --system, so two
systems of one benchmark in separate EVAL_DIRs compare too). For every other one, over the items both
rendered (same item id, subject, prompt and seed; the sampler settings may differ, that is the point), the
per-item difference other - baseline of each score, with a 95 % bootstrap CI over subjects (the same
resampling as results.json). Pairing removes the subject-to-subject spread that makes two unpaired CIs overlap.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.bench import emit_or_fail

METRICS = ("overall", "subject", "text", "realism", "traits", "dino")


def _rows(eval_dir: Path) -> dict[str, dict]:
    from tools.bench.output_diff import _rows as read_rows

    return {r["item_id"]: r for r in read_rows(eval_dir)}


def paired_diffs(dirs: list[Path], system: str = "suti", metrics=METRICS, baseline_system: str | None = None) -> dict:
    """{dir: {metric: {"mean": B - A, "ci": [lo, hi], "n": items, "subjects_higher": k, "subjects": n}}}."""
    import numpy as np

    from suti.errors import InputError
    from suti.eval.report import _values, bootstrap_mean

    if len(dirs) < 2:
        raise InputError("give a baseline EVAL_DIR and at least one other to compare with it")
    base = _rows(dirs[0])
    base_system = baseline_system or system
    out = {}
    for other_dir in dirs[1:]:
        other = _rows(other_dir)
        ids = sorted(set(base) & set(other))
        if not ids:
            raise InputError(f"{dirs[0]} and {other_dir} share no item: not the same benchmark prompts")
        for i in ids:
            if (base[i]["prompt"], base[i]["subject"]) != (other[i]["prompt"], other[i]["subject"]):
                raise InputError(f"item {i} asks different things in {dirs[0]} and {other_dir}: not the same benchmark")
        rows_a, rows_b = [base[i] for i in ids], [other[i] for i in ids]
        for rows, where, name in ((rows_a, dirs[0], base_system), (rows_b, other_dir, system)):
            if not any(name in r.get("scores", {}) or name in r.get("failures", {}) for r in rows):
                raise InputError(f"system {name!r} has no graded output in {where}")
        clusters = np.asarray([r["subject"] for r in rows_a])
        keys, inv = np.unique(clusters, return_inverse=True)
        res = {}
        for m in metrics:
            diff = _values(rows_b, system, m) - _values(rows_a, base_system, m)  # (items,)
            ok = ~np.isnan(diff)
            per_subject = np.bincount(inv[ok], weights=diff[ok], minlength=len(keys))
            res[m] = {**bootstrap_mean(diff, clusters), "subjects_higher": int((per_subject > 0).sum()),
                      "subjects": len(keys)}  # fmt: skip
        out[str(other_dir)] = res
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.paired_diff", description=__doc__.splitlines()[0])
    parser.add_argument("eval_dirs", nargs="+", type=Path, help="baseline EVAL_DIR, then the ones to compare")
    parser.add_argument("--system", default="suti", help="system name in every EVAL_DIR (default suti)")
    parser.add_argument("--baseline-system", help="system name in the baseline EVAL_DIR (default: --system)")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)
    base_system = args.baseline_system or args.system
    return emit_or_fail(lambda: {"baseline": str(args.eval_dirs[0]), "baseline_system": base_system,
                                 "system": args.system,
                                 "diffs": paired_diffs(args.eval_dirs, args.system, baseline_system=base_system)},
                        args.out)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
