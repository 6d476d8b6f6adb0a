"""Benchmarks: `python -m tools.bench.<name> --out FILE.json`. Not tests; run them on an idle machine."""


def emit_json(result: dict, out) -> int:
    """Print `result` as indented JSON and, if `out` (a Path) is given, write it there too; returns 0."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


def emit_or_fail(compute, out) -> int:
    """Run `compute()` and emit its JSON (0); a SutiError becomes one `error:` line on stderr (2), no file."""
    import sys

    from suti.errors import SutiError

    try:
        result = compute()
    except SutiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return emit_json(result, out)
