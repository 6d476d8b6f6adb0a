"""DreamBooth step-count sweep: where its own world-DreamBench score peaks (the step count P1 must use).

    python -m tools.bench.dreambooth_sweep out/bench30_db_g3 out/bench30_dbsweep_g3 \
        --out bench/dreambooth_sweep_g3.json [--metric overall]

Reads the results.json of one or more EVAL_DIRs written by `suti eval auto` with the same benchmark
(same fingerprint: subjects, prompts, sampler, steps, guidance) and collects every `dreambooth:DIR[@N]`
system (no `@N` = the `dreambooth` recipe's own loop.max_steps). All of them must fine-tune the same
base DIR. Per step count it records the scores with their 95 % CIs and the time; the peak is the step
count with the highest mean of `--metric`, ties going to the fewest steps (the cheaper DreamBooth, so
a cost ratio taken there can only be smaller than at any other tied count). `peak_at_edge` says the
highest score is at the largest count swept: DreamBooth might score higher still with more steps.
`python -m tools.bench.train_bench --parts p1 --steps-from FILE` times P1 at the peak.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.bench import emit_or_fail

METRICS = ("overall", "subject", "text", "realism", "traits", "dino", "clip_i", "clip_t")


def _results(eval_dir: Path) -> dict:
    from suti.errors import InputError

    path = eval_dir / "results.json"
    if not path.is_file():
        raise InputError(f"{path} not found: is {eval_dir} an EVAL_DIR that `suti eval auto` finished?")
    return json.loads(path.read_text())


def sweep(eval_dirs: list[Path], metric: str = "overall") -> dict:
    """{"benchmark", "base", "metric", "steps": {N: scores}, "peak": {...}} over the DreamBooth systems."""
    from suti.errors import InputError
    from suti.eval.systems import parse_dreambooth_spec
    from suti.train.recipe import load_recipe

    if metric not in METRICS:
        raise InputError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    recipe_steps = load_recipe("dreambooth").loop.max_steps
    bench, bases, rows = None, set(), {}
    for d in eval_dirs:
        res = _results(d)
        fp = res["benchmark"]["fingerprint"]
        if bench is not None and fp != bench["fingerprint"]:
            raise InputError(f"{d} was run with benchmark {fp}, the first EVAL_DIR with {bench['fingerprint']}: "
                             "the scores are not comparable")  # fmt: skip
        bench = bench or res["benchmark"]
        for name, s in res["systems"].items():
            spec = s["run"]["spec"]
            if not spec.startswith("dreambooth:"):
                continue
            base, steps = parse_dreambooth_spec(spec.split(":", 1)[1])
            steps = steps or recipe_steps
            if steps in rows:
                raise InputError(f"{steps} DreamBooth steps appear twice ({rows[steps]['system']} and {d.name}/{name})")
            bases.add(str(Path(base)))
            rows[steps] = {"system": f"{d.name}/{name}", "spec": spec, "items": s["items"],
                           "failures": s["failures"], "seconds": s["run"]["seconds"],
                           **{m: s[m] for m in METRICS}}  # fmt: skip
    if not rows:
        raise InputError(f"no dreambooth:DIR[@N] system in {', '.join(str(d) for d in eval_dirs)}")
    if len(bases) > 1:
        raise InputError(f"the DreamBooth systems fine-tune different bases ({', '.join(sorted(bases))})")
    order = sorted(rows)
    best = max(order, key=lambda n: (rows[n][metric]["mean"], -n))  # ties: fewest steps
    ci = rows[best][metric]["ci"]
    within = [n for n in order if n != best and rows[n][metric]["mean"] >= ci[0]]
    return {
        "benchmark": bench, "base": bases.pop(), "metric": metric, "recipe_default_steps": recipe_steps,
        "steps": {str(n): rows[n] for n in order},
        "peak": {"steps": best, metric: rows[best][metric], "peak_at_edge": best == order[-1] and len(order) > 1,
                 "inside_peak_ci": within,
                 "note": ("the step count with the highest mean; ties go to the fewest steps. inside_peak_ci lists "
                          "the other counts whose mean lies inside the peak's 95% CI (not separable from it).")},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.dreambooth_sweep", description=__doc__.split("\n")[0])
    p.add_argument("eval_dirs", type=Path, nargs="+", help="EVAL_DIRs of one benchmark with dreambooth systems.")
    p.add_argument("--metric", default="overall", help=f"score whose peak is picked ({', '.join(METRICS)}).")
    p.add_argument("--out", type=Path, help="JSON file to write (default: print only).")
    args = p.parse_args(argv)
    return emit_or_fail(lambda: sweep(args.eval_dirs, args.metric), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
