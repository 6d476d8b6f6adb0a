"""Resolve what a user types after `--model`: a saved pipeline directory, a preset name, or `default`.

    pipe = load_pipeline("default")       # the bundled world model shipped in suti/assets/world
    pipe = load_pipeline("out/my-model")  # any directory written by SuTIPipeline.save_pretrained
    pipe = load_pipeline("tiny")          # a preset with RANDOM weights (tests, smoke runs)
"""

from __future__ import annotations

import warnings
from pathlib import Path

from suti.errors import ModelLoadError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "world"


def bundled_model_dir() -> Path:
    """The bundled model's directory; ModelLoadError if this install does not carry it."""
    if not (BUNDLED_DIR / "model_index.json").is_file():
        raise ModelLoadError("the bundled 'default' model is not in this install (suti/assets/world); "
                             "pass --model DIR with a trained model (see docs/training.md)")
    return BUNDLED_DIR


def load_pipeline(spec: str | Path, dtype=None):
    """A SuTIPipeline from a directory, a preset name (random weights, with a warning) or 'default'."""
    from configs import preset_names
    from suti.pipeline.pipeline_suti import SuTIPipeline

    name = str(spec)
    if name == "default":
        pipe = SuTIPipeline.from_pretrained(bundled_model_dir(), dtype=dtype)
    elif Path(name).is_dir():
        pipe = SuTIPipeline.from_pretrained(name, dtype=dtype)
    elif name in preset_names():
        warnings.warn(f"model {name!r} is a preset: its weights are random (fine for tests, not for images)",
                      UserWarning, stacklevel=2)
        pipe = SuTIPipeline.from_config(name)
        if dtype is not None:
            pipe.to(dtype=dtype)
    else:
        raise ModelLoadError(f"model {name!r} is neither a directory, a preset ({', '.join(preset_names())}) "
                             "nor 'default'")
    return pipe
