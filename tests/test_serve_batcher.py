"""MicroBatcher with a plain Python `run` (no model): merging, bounds, deadlines, isolation of failures."""

from __future__ import annotations

import threading
import time

import pytest

from suti.serve.batcher import MicroBatcher
from suti.serve.errors import QueueFull, Timeout


class Recorder:
    """`run` that records each call's jobs; waits on `gate` first so tests can line jobs up."""

    def __init__(self):
        self.calls: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, jobs):
        self.entered.set()
        self.gate.wait(10)
        self.calls.append([j.payload for j in jobs])
        if any(j.payload == "boom" for j in jobs):
            raise RuntimeError("boom")
        return [f"done:{j.payload}" for j in jobs]


def lined_up(max_batch=4, queue_size=8, max_wait_s=0.0):
    """A batcher whose worker is stuck on a first job, so submitted jobs queue up."""
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=max_batch, max_wait_s=max_wait_s, queue_size=queue_size).start()
    rec.gate.clear()
    first = b.submit(None, 1, "first", timeout_s=10)
    assert rec.entered.wait(5)
    return b, rec, first


def test_compatible_jobs_merge_up_to_max_batch_and_others_keep_their_place():
    b, rec, _ = lined_up(max_batch=4)
    jobs = [b.submit("A", 2, "a1", 10), b.submit("B", 1, "b1", 10), b.submit("A", 1, "a2", 10),
            b.submit("A", 2, "a3", 10), b.submit("A", 1, "a4", 10)]
    rec.gate.set()
    assert [j.future.result(5) for j in jobs] == ["done:a1", "done:b1", "done:a2", "done:a3", "done:a4"]
    # a1 + a2 + a4 fill 4 images (a3 would overflow), then b1 (next in line), then a3
    assert rec.calls == [["first"], ["a1", "a2", "a4"], ["b1"], ["a3"]]
    assert jobs[0].batch_images == 4 and jobs[1].batch_images == 1
    assert b.stats.max_batch_seen == 4 and b.stats.batches == 4
    b.close()


def test_key_none_jobs_always_run_alone():
    b, rec, _ = lined_up()
    jobs = [b.submit(None, 1, f"n{i}", 10) for i in range(3)]
    rec.gate.set()
    [j.future.result(5) for j in jobs]
    assert rec.calls[1:] == [["n0"], ["n1"], ["n2"]]
    b.close()


def test_max_wait_collects_late_arrivals():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=8, max_wait_s=0.3, queue_size=8).start()
    j1 = b.submit("A", 1, "early", 10)
    time.sleep(0.05)
    j2 = b.submit("A", 1, "late", 10)
    j1.future.result(5), j2.future.result(5)
    assert rec.calls == [["early", "late"]]
    b.close()


def test_the_fill_wait_starts_when_the_worker_frees_up():
    """A job that waited in line longer than max_wait still waits for arrivals once the worker is free,
    so clients just answered rejoin the next batch (instead of alternating half-full batches)."""
    b, rec, _ = lined_up(max_wait_s=0.5)
    old = b.submit("A", 1, "old", 10)
    time.sleep(0.6)  # `old` is now older than max_wait
    rec.gate.set()
    deadline = time.monotonic() + 5
    while not (len(rec.calls) == 1 and b.pending == 0) and time.monotonic() < deadline:
        time.sleep(0.002)  # the worker finished `first` and holds `old`, filling its batch
    new = b.submit("A", 1, "new", 10)
    old.future.result(5), new.future.result(5)
    assert rec.calls == [["first"], ["old", "new"]]
    b.close()


def test_full_queue_refuses_with_retry_after_and_counts():
    b, rec, _ = lined_up(queue_size=3)
    b.submit("A", 2, "a", 10)
    with pytest.raises(QueueFull) as e:
        b.submit("A", 2, "too-many", 10)
    assert int(e.value.headers["Retry-After"]) >= 1 and e.value.status == 429
    b.submit("A", 1, "fits", 10)
    assert b.saturated and b.stats.rejected == 1
    rec.gate.set()
    b.close()


def test_expired_and_cancelled_jobs_are_dropped_before_running():
    b, rec, _ = lined_up()
    stale = b.submit("A", 1, "stale", timeout_s=0.05)
    gone = b.submit("B", 1, "gone", timeout_s=10)
    assert gone.future.cancel()
    time.sleep(0.1)
    rec.gate.set()
    with pytest.raises(Timeout):
        stale.future.result(5)
    assert b.submit("A", 1, "fresh", 10).future.result(5) == "done:fresh"
    assert rec.calls == [["first"], ["fresh"]] and b.stats.expired == 1
    b.close()


def test_a_failing_batch_fails_its_jobs_only_and_the_worker_survives():
    b, rec, _ = lined_up()
    bad = [b.submit("A", 1, "boom", 10), b.submit("A", 1, "neighbour", 10)]
    rec.gate.set()
    for j in bad:
        with pytest.raises(RuntimeError, match="boom"):
            j.future.result(5)
    assert b.submit("A", 1, "after", 10).future.result(5) == "done:after"
    b.close()
