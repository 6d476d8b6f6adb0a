"""The apprentice recipe under `accelerate launch` with 2 CPU processes (torch.distributed, gloo backend).

accelerate 1.x starts several CPU processes only through MPI (`--cpu` + `--mpirun_hostfile`) or through
its torchrun launcher (`--multi_gpu`, which on a machine without GPUs gives CPU processes and gloo).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_apprentice_run(tmp_path):
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "CUDA_VISIBLE_DEVICES": ""}
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
           "-m", "tools.train", "apprentice", "--config", "apprentice_tiny", "--out", str(out),
           "--max-steps", "3", "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["step"] == 3
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # one log line per step: only the main process writes
    assert (out / "checkpoints" / "step-0000003" / "trainable.safetensors").is_file()
    from suti.pipeline import SuTIPipeline

    pipe = SuTIPipeline.from_pretrained(out / "model")
    assert any(abs(g) > 0 for g in pipe.subject.gates().values())
