"""Automatic evaluation: world DreamBench with validated graders (see docs/evaluation.md)."""
