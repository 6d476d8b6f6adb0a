"""What each system draws of what the prompt asks: per asked change, P(its field shows the prompted value).

    python -m tools.bench.field_shown out/bench30_r35 out/bench30_r37_acc --out bench/fields_shown.json

For every EVAL_DIR and every system in it (or the `--system` ones), the graders' per-field
probabilities of the items (items.jsonl "fields") grouped by what the prompt changes: a scene, a
style, a new colour, a rotation, a mirror image, a size, a position, each accessory (and "accessory:none",
the prompts that name no accessory: there the field says none is drawn). Means with 95 % CIs over
subjects, the same bootstrap as results.json; new EVAL_DIRs carry the same table as results.json
"asked", this command reads older ones too. A grader check, not a score: ground truth ("gt") shows
each change 94-100 % of the time at 32 px, a copied demo ("copy") none of the changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.bench import emit_or_fail
from tools.bench.output_diff import _rows


def fields_shown(eval_dirs: list[Path], systems: list[str] | None = None) -> dict:
    """{eval_dir: {system: {change: {"mean", "ci", "n"}}}}."""
    from suti.errors import InputError
    from suti.eval.report import asked_summary, rows_of, system_names

    out = {}
    for d in eval_dirs:
        rows = _rows(d)
        present = system_names(rows)
        missing = [s for s in systems or [] if s not in present]
        if missing:
            raise InputError(f"{d}: no system {', '.join(map(repr, missing))} (has {', '.join(present)})")
        if not any(r.get("fields") for r in rows):
            raise InputError(f"{d}: items are not graded (no per-field scores); run `suti eval auto --resume` on it")
        out[d.as_posix()] = {s: asked_summary(rows_of(rows, s), s) for s in systems or present}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.field_shown", description=__doc__.split("\n")[0])
    ap.add_argument("eval_dirs", nargs="+", type=Path, help="EVAL_DIRs written and graded by `suti eval auto`.")
    ap.add_argument("--system", action="append", help="System to report (repeat; default: every system).")
    ap.add_argument("--out", type=Path, help="JSON file to write (default: print only).")
    args = ap.parse_args(argv)
    return emit_or_fail(lambda: fields_shown(args.eval_dirs, args.system), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
