"""Output change between systems of one EVAL_DIR: how much an ablation moves the images.

    python -m tools.bench.output_diff out/ablate --reference d5 [--system d3 --system d1 ...] \
        --out bench/ablate_diff.json

For every system, over the items that both it and the reference rendered, the mean absolute pixel
difference in grey levels (0-255) between its image and the reference's image of the same item
(same subject, prompt and seed). 0 means the ablation changed nothing; it is not a quality score (the
graders' results.json has those), only how far an option moves the sampler's output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.bench import emit_or_fail


def _rows(eval_dir: Path) -> list[dict]:
    from suti.errors import InputError

    items = eval_dir / "items.jsonl"
    if not items.is_file():
        raise InputError(f"{items} not found: is {eval_dir} an EVAL_DIR written by `suti eval auto`?")
    return [json.loads(line) for line in items.read_text().splitlines() if line.strip()]


def output_diffs(eval_dir: Path, reference: str, systems: list[str] | None = None) -> dict:
    """{system: {"items": n, "mean_abs_change": grey levels}} against `reference`, per shared item."""
    import numpy as np
    from PIL import Image

    from suti.errors import InputError

    rows = _rows(eval_dir)
    ran = sorted({name for r in rows for name in r.get("outputs", {})})
    if reference not in ran:
        raise InputError(f"reference system {reference!r} has no outputs in {eval_dir} (systems: {', '.join(ran)})")
    systems = systems or [s for s in ran if s != reference]
    missing = [s for s in systems if s not in ran]
    if missing:
        raise InputError(f"system(s) {', '.join(missing)} have no outputs in {eval_dir} (systems: {', '.join(ran)})")

    def load(rel: str) -> np.ndarray:
        return np.asarray(Image.open(eval_dir / rel).convert("RGB"), dtype=np.float64)  # (H, W, 3)

    out = {}
    for name in systems:
        changes = []
        for r in rows:
            outs = r.get("outputs", {})
            if name in outs and reference in outs:
                a, b = load(outs[name]), load(outs[reference])
                if a.shape != b.shape:
                    raise InputError(f"item {r.get('item_id')}: {name} is {a.shape[:2]}, {reference} {b.shape[:2]}")
                changes.append(float(np.abs(a - b).mean()))
        if not changes:
            raise InputError(f"{name} and {reference} share no rendered item in {eval_dir}")
        out[name] = {"items": len(changes), "mean_abs_change": round(sum(changes) / len(changes), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.output_diff", description=__doc__.split("\n")[0])
    p.add_argument("eval_dir", type=Path, help="EVAL_DIR written by `suti eval auto`.")
    p.add_argument("--reference", required=True, help="System the others are compared with.")
    p.add_argument("--system", action="append", help="System to compare (repeat; default: all others).")
    p.add_argument("--out", type=Path, help="JSON file to write (default: print only).")
    args = p.parse_args(argv)
    return emit_or_fail(lambda: {"eval_dir": args.eval_dir.name, "reference": args.reference,
                                 "systems": output_diffs(args.eval_dir, args.reference, args.system)},
                        args.out)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
