"""Test-wide settings: fully offline, quiet, small thread pools (CI has 2 cores)."""

import os

# Never reach a model/dataset hub from a test; everything is built locally at tiny size.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
