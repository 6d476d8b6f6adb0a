"""Export a training run's model as a small pipeline directory with its provenance.

    export_run("runs/world", "models/world", fp16=True, command="suti train apprentice ...")

writes models/world/ (SuTIPipeline.save_pretrained, float16 weights: load it with
`SuTIPipeline.from_pretrained(dir, dtype=torch.float32)` on CPU) and models/world/training.json:
the recipe, the step reached, wall/CPU time, the last conditioning metrics and the command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from suti.errors import InputError
from suti.train.checkpoint import MODEL_DIR, export_pipeline, latest_checkpoint

PROVENANCE = "training.json"


def _last_json_line(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {}


def export_run(run: str | Path, out: str | Path, fp16: bool = True, command: str = "") -> dict[str, Any]:
    import torch

    from suti.pipeline import SuTIPipeline

    run, out = Path(run), Path(out)
    ckpt = latest_checkpoint(run)
    if ckpt is None or not (run / MODEL_DIR / "model_index.json").is_file():
        raise InputError(f"{str(run)!r} is not a training run with a checkpoint and {MODEL_DIR}/")
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
    pipe = SuTIPipeline.from_pretrained(run / MODEL_DIR, dtype=torch.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_pipeline(pipe, out, fp16=fp16)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    info = {
        "step": int(state["step"]), "elapsed_s": round(float(state.get("elapsed_s", 0.0)), 1),
        "cpu_s": round(float(state.get("cpu_s", 0.0)), 1), "dtype": "float16" if fp16 else "float32",
        "size_mb": size / 1e6, "metrics": _last_json_line(run / "metrics.jsonl"),
        "recipe": json.loads((ckpt / "config.json").read_text())["recipe"], "command": command,
    }
    (out / PROVENANCE).write_text(json.dumps(info, indent=2) + "\n")
    return info
