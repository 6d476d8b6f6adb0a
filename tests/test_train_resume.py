"""A run killed with SIGKILL resumes from its last checkpoint, reaches the same step count, and ends with
exactly the weights of an uninterrupted run (batches, noise and timesteps are functions of the step)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tools.train import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    d = run / "checkpoints" / f"step-{step:07d}"
    return {**load_file(str(d / "trainable.safetensors")),
            **{f"ema.{k}": v for k, v in load_file(str(d / "ema.safetensors")).items()}}


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    # The killed run (a subprocess) and the in-process runs must use the same number of threads: CPU
    # kernels may split reductions differently with another thread count, which changes the last bits.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tools.train", "base", "--config", "base_tiny", "--out", str(killed),
           "--max-steps", str(STEPS), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while not (killed / "checkpoints" / "step-0000002" / "state.pt").is_file():
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.time() > deadline:
                pytest.fail("no checkpoint within 180 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in (killed / "checkpoints").iterdir() if not p.name.startswith("."))
    assert done and done[-1] < f"step-{STEPS:07d}"  # really interrupted before the end

    assert main(["base", "--out", str(killed), "--resume", "--no-progress"]) == 0  # recipe from recipe.json
    assert json.loads((killed / "summary.json").read_text())["step"] == STEPS
    assert (killed / "checkpoints" / f"step-{STEPS:07d}" / "state.pt").is_file()

    straight = tmp_path / "straight"
    assert main(["base", "--config", "base_tiny", "--out", str(straight), "--max-steps", str(STEPS),
                 "--no-progress"]) == 0
    a, b = _weights(killed, STEPS), _weights(straight, STEPS)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_checkpoint_or_recipe_is_a_user_error(tmp_path, capsys):
    assert main(["apprentice", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "recipe.json" in capsys.readouterr().err
