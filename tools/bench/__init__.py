"""Benchmarks: `python -m tools.bench.<name> --out FILE.json`. Not tests; run them on an idle machine."""
