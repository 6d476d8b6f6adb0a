"""20 raters submit concurrently over HTTP while the server is SIGKILLed and restarted twice.

Clients retry a failed request with the same idempotency key until they get an acknowledgement.
At the end the database must hold exactly the acknowledged ratings: none lost, none duplicated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from _human import free_port, make_eval_dir, postgres_url, reset_postgres
from sqlalchemy import func, select

from suti.human.db import Assignment, Database, Rating
from suti.human.study import StudyConfig, create_study

ROOT = Path(__file__).resolve().parents[1]
N_RATERS = 20


class Server:
    """`suti eval human serve` as a separate process, so it can be killed with SIGKILL."""

    def __init__(self, db_path: str, log: Path):
        self.db_path, self.log, self.port, self.proc = db_path, log, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tools.eval_human", "serve", "--db", str(self.db_path),
                                          "--port", str(self.port)], cwd=ROOT, env=env, stdout=log, stderr=log)  # fmt: skip
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


class Rater(threading.Thread):
    """Rates every page of one queue; retries each submission with the same key until acknowledged."""

    def __init__(self, base: str, token: str, seed: int):
        super().__init__(daemon=True)
        self.base, self.token, self.rng = base, token, np.random.default_rng(seed)
        self.acks: list[tuple[dict, dict]] = []  # (what was sent, the acknowledgement)
        self.transport_errors, self.server_errors, self.refused = 0, 0, []

    def _call(self, client: httpx.Client, method: str, path: str, **kw) -> httpx.Response:
        while True:
            try:
                r = client.request(method, f"{self.base}{path}", headers={"Accept": "application/json"}, **kw)
            except httpx.TransportError:
                self.transport_errors += 1
                time.sleep(0.05)
                continue
            if r.status_code >= 500:
                self.server_errors += 1
                time.sleep(0.05)
                continue
            return r

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            total = self._call(client, "GET", f"/r/{self.token}").json()["total"]
            for position in range(total):
                ref = self._call(client, "GET", f"/r/{self.token}/{position}").json()["ref"]
                sent = {"ref": ref, "submission_id": uuid.uuid4().hex,
                        **{axis: str(self.rng.choice([0, 0.5, 1])) for axis in ("subject", "text", "realism")}}  # fmt: skip
                r = self._call(client, "POST", f"/r/{self.token}/{position}", json=sent)
                if r.status_code != 200:
                    self.refused.append((position, r.status_code, r.text))
                    continue
                self.acks.append((sent, r.json()))
                time.sleep(float(self.rng.uniform(0.0, 0.03)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_target(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "study.db")
        return
    with postgres_url() as url:
        reset_postgres(url)
        yield url


def test_twenty_raters_survive_sigkill_without_losing_or_duplicating(tmp_path, db_target):
    eval_dir = make_eval_dir(tmp_path / "evaldir", subjects=(3, 5, 8, 11), prompts=3)
    db_path = db_target
    db = Database.open(db_path)
    made = create_study(db, eval_dir, StudyConfig(name="load", systems=("gt", "blur"),
                                                  raters=tuple(f"r{i:02d}" for i in range(N_RATERS)),
                                                  raters_per_item=8, gold_fraction=0.1))  # fmt: skip
    expected = made.counts["assignments"]
    server = Server(db_path, tmp_path / "server.log")
    server.start()
    raters = [Rater(server.url, token, i) for i, token in enumerate(made.rater_tokens.values())]
    for r in raters:
        r.start()
    kills = []
    for share in (1 / 3, 2 / 3):
        while sum(len(r.acks) for r in raters) < share * expected:
            time.sleep(0.01)
        acked_before = sum(len(r.acks) for r in raters)
        server.kill()
        kills.append(acked_before)
        time.sleep(0.3)  # clients keep retrying against a dead port meanwhile
        server.start()
    for r in raters:
        r.join(120)
    server.kill()
    assert not any(r.is_alive() for r in raters)
    assert [x for r in raters for x in r.refused] == []
    acks = [(sent, ack) for r in raters for sent, ack in r.acks]
    transport_errors = sum(r.transport_errors for r in raters)
    replays = sum(ack["replay"] for _, ack in acks)
    print(
        f"\n{len(acks)} acknowledged ratings from {N_RATERS} raters; SIGKILL after {kills} acks; "
        f"{transport_errors} transport errors retried; {replays} replayed acknowledgements"
    )
    assert len(kills) == 2 and 0 < kills[0] < kills[1] < expected and transport_errors > 0
    with db.read() as s:
        stored = {r.id: r for r in s.scalars(select(Rating))}
        per_assignment = s.scalar(select(func.count(func.distinct(Rating.assignment_id))))
        assert s.scalar(select(func.count()).select_from(Assignment)) == expected
    acked_ids = [ack["rating_id"] for _, ack in acks]
    assert len(acks) == expected and len(set(acked_ids)) == expected  # every page acknowledged once
    assert set(stored) == set(acked_ids)  # nothing lost, nothing extra
    assert per_assignment == len(stored) == expected  # no page rated twice
    for sent, ack in acks:
        row = stored[ack["rating_id"]]
        assert row.submission_id == sent["submission_id"]
        assert (row.subject, row.text, row.realism) == tuple(float(sent[a]) for a in ("subject", "text", "realism"))
    db.dispose()
