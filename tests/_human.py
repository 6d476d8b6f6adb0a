"""Helpers for tests/test_human_*.py: a small EVAL_DIR from world renders, a throwaway PostgreSQL,
a loopback uvicorn server in a thread, and a fresh rater submission."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from suti.world import SKILLS, Context, caption, for_skill, make_subject, render

SYSTEMS = ("gt", "copy", "blur")


def make_eval_dir(root: Path, subjects=(3, 5, 8), prompts: int = 2, size: int = 32, world_seed: int = 0) -> Path:
    """EVAL_DIR per the shared contract: gt = the ground-truth render (ceiling), copy = a demo (text
    floor), blur = the ground truth blurred and noised (a weak system)."""
    rng = np.random.default_rng(world_seed)
    lines = []
    for sid in subjects:
        subject = make_subject(sid, world_seed)
        demo_ctx = [Context(variant=k) for k in range(3)]
        demos = []
        for k, ctx in enumerate(demo_ctx):
            rel = f"demos/s{sid:03d}/{k}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            render(subject, ctx, size).save(root / rel)
            demos.append(rel)
        for j in range(prompts):
            skill = SKILLS[(sid + j) % len(SKILLS)]
            ctx = for_skill(skill, rng, subject)
            item_id = f"s{sid:03d}-p{j:02d}-0"
            truth = render(subject, replace(ctx, variant=0), size)
            noisy = np.asarray(truth.filter(ImageFilter.GaussianBlur(2)), dtype=float) + rng.normal(
                0, 25, (size, size, 3)
            )
            images = {"gt": truth, "copy": Image.open(root / demos[0]).copy(),
                      "blur": Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))}  # fmt: skip
            outputs = {}
            for system, image in images.items():
                rel = f"outputs/{system}/{item_id}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                image.save(root / rel)
                outputs[system] = rel
            lines.append({"item_id": item_id, "subject": f"s{sid:03d}", "skill": skill, "prompt": caption(subject, ctx),
                          "seed": 0, "demos": demos, "demo_captions": [caption(subject, c) for c in demo_ctx],
                          "outputs": outputs, "context": ctx.to_dict() if j % 2 else None})  # fmt: skip
    (root / "items.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (root / "results.json").write_text(json.dumps({"benchmark": {"config": {"world_seed": world_seed}}}))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh(ref: str, **answer) -> dict:
    """A form for one page with a new idempotency key."""
    return {"ref": ref, "submission_id": uuid.uuid4().hex, **{k: str(v) for k, v in answer.items()}}


class ThreadServer:
    """The real app on a loopback port, served by uvicorn in a background thread."""

    def __init__(self, db):
        import uvicorn

        from suti.human.app import make_app

        self.port = free_port()
        config = uvicorn.Config(make_app(db), host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on a Unix socket in a temp dir.

    Runs as the `postgres` user when the tests run as root (initdb refuses root). `skip_reason` is
    set instead of raising when it cannot be started.
    """

    def __init__(self):
        self.url, self.skip_reason, self.dir = None, None, None
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            self.skip_reason = "PostgreSQL not available: no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin"
            return
        self.pg_ctl, self.prefix = pg_ctl, []
        self.dir = Path(tempfile.mkdtemp(prefix="suti-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                self.skip_reason = "running as root and there is no 'postgres' user to run initdb as"
                return
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        port = free_port()
        data = self.dir / "data"
        try:
            self._run([initdb, "-D", str(data), "-A", "trust", "-U", "suti", "--no-sync", "-E", "UTF8"])
            self._run([pg_ctl, "-D", str(data), "-l", str(self.dir / "log"), "-w", "-t", "30", "-o",
                       f"-k {self.dir} -p {port} -c listen_addresses='' -c fsync=off", "start"])  # fmt: skip
        except (subprocess.CalledProcessError, OSError) as e:
            self.skip_reason = f"could not start a throwaway PostgreSQL: {e}"
            return
        self.url = f"postgresql://suti@/postgres?host={self.dir}&port={port}"

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(self.prefix + cmd, check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        if self.url:
            try:
                self._run([self.pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate", "stop"])
            except (subprocess.CalledProcessError, OSError):
                pass
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def reset_postgres(url: str) -> None:
    """Drops every table of a disposable PostgreSQL database, so each test starts empty."""
    from sqlalchemy import create_engine, text

    from suti.human.db import database_url

    engine = create_engine(database_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


@contextlib.contextmanager
def postgres_url():
    """A disposable PostgreSQL URL: $SUTI_TEST_PG_URL, else a throwaway cluster; skips the test otherwise."""
    import pytest

    env = os.environ.get("SUTI_TEST_PG_URL")
    if env:
        yield env
        return
    cluster = PostgresCluster()
    try:
        if cluster.skip_reason:
            pytest.skip(cluster.skip_reason)
        yield cluster.url
    finally:
        cluster.stop()
