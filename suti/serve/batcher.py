"""A bounded job queue with one worker thread that merges compatible jobs into one model call.

    batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.01, queue_size=64).start()
    job = batcher.submit(key=("gen", 4, 5.0, 3.0), size=2, payload=..., timeout_s=60)  # QueueFull -> 429
    result = job.future.result()

- `size` is the job's number of images; the queue holds at most `queue_size` images. A job that does
  not fit is refused at once with `QueueFull` (its Retry-After estimates when room will exist).
- Jobs with equal non-None `key` (same steps and guidance scales) are merged, up to `max_batch` images,
  waiting at most `max_wait_s` once the worker is free to fill the batch; other jobs keep their place in
  line. (Timing the wait from the worker, not from the first job's arrival, matters under load: else
  the clients split into two half-size groups that alternate, each batch half full.)
  `key=None` jobs (e.g. encoding a subject) always run alone.
- A job whose deadline passed (or whose caller gave up) before it started is dropped with `Timeout`.
- `run(jobs) -> results` executes on the single worker thread, so the model is never used re-entrantly.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from suti.serve.errors import QueueFull, Timeout, Unavailable


@dataclass(eq=False)
class Job:
    key: Hashable | None
    size: int
    payload: Any
    deadline: float  # time.monotonic() after which the job must not start
    enqueued: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)
    started: float | None = None
    finished: float | None = None
    batch_images: int = 0  # images in the model call this job ran in

    def timings_ms(self) -> dict[str, float]:
        start = self.started or self.enqueued
        end = self.finished or start
        return {"queue": round((start - self.enqueued) * 1000, 2), "run": round((end - start) * 1000, 2)}


@dataclass
class BatcherStats:
    jobs: int = 0
    batches: int = 0
    images: int = 0
    rejected: int = 0  # refused with QueueFull
    expired: int = 0  # dropped at their deadline before they started
    max_batch_seen: int = 0

    def to_dict(self) -> dict:
        mean = self.images / self.batches if self.batches else 0.0
        return {**self.__dict__, "mean_batch_images": round(mean, 3)}


class MicroBatcher:
    def __init__(self, run: Callable[[list[Job]], list[Any]], max_batch: int = 8, max_wait_s: float = 0.01,
                 queue_size: int = 64, name: str = "suti-batcher"):
        self._run = run
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.queue_size = int(queue_size)
        self.stats = BatcherStats()
        self._queue: deque[Job] = deque()
        self._pending = 0  # images waiting in the queue (not yet taken by the worker)
        self._cv = threading.Condition()
        self._closed = False
        self._busy = False
        self._ema_batch_s = 1.0  # running estimate of one call's duration, for Retry-After
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> MicroBatcher:
        self._thread.start()
        return self

    # -- client side ---------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return self._pending

    @property
    def busy(self) -> bool:
        """True while the worker holds a batch (running it, or about to)."""
        return self._busy

    @property
    def saturated(self) -> bool:
        return self._pending >= self.queue_size

    def retry_after_s(self) -> int:
        waves = self._pending / max(1, self.max_batch) + 1
        return max(1, math.ceil(self._ema_batch_s * waves))

    def submit(self, key: Hashable | None, size: int, payload: Any, timeout_s: float) -> Job:
        job = Job(key, int(size), payload, deadline=time.monotonic() + timeout_s)
        with self._cv:
            if self._closed:
                raise Unavailable("the server is shutting down", code="shutting_down")
            if self._pending + job.size > self.queue_size:
                self.stats.rejected += 1
                raise QueueFull(f"the generation queue is full ({self._pending} of {self.queue_size} images "
                                "waiting); retry later", headers={"Retry-After": str(self.retry_after_s())})
            self._queue.append(job)
            self._pending += job.size
            self._cv.notify_all()
        return job

    def close(self, timeout_s: float = 10.0) -> None:
        with self._cv:
            self._closed = True
            left, self._queue = list(self._queue), deque()
            self._pending = 0
            self._cv.notify_all()
        for job in left:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(Unavailable("the server is shutting down", code="shutting_down"))
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # -- worker side ---------------------------------------------------------------------------------------
    def _take_compatible(self, key: Hashable, room: int) -> Job | None:
        for job in self._queue:
            if job.key == key and job.size <= room:
                self._queue.remove(job)
                self._pending -= job.size
                return job
        return None

    def _next_batch(self) -> list[Job] | None:
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            first = self._queue.popleft()
            self._pending -= first.size
            self._busy = True
            batch, size = [first], first.size
            if first.key is not None:  # wait from NOW, not from first.enqueued: when the worker frees up,
                until = time.monotonic() + self.max_wait_s  # clients it just answered can rejoin this batch
                while size < self.max_batch:
                    job = self._take_compatible(first.key, self.max_batch - size)
                    if job is not None:
                        batch.append(job)
                        size += job.size
                        continue
                    left = until - time.monotonic()
                    if left <= 0 or self._closed:
                        break
                    self._cv.wait(left)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            now = time.monotonic()
            live = []
            for job in batch:
                if not job.future.set_running_or_notify_cancel():
                    continue  # the caller gave up while it was queued
                if now > job.deadline:
                    self.stats.expired += 1
                    job.future.set_exception(Timeout("the request timed out in the queue", code="timeout"))
                    continue
                live.append(job)
            if live:
                self._execute(live)
            with self._cv:
                self._busy = False

    def _execute(self, jobs: list[Job]) -> None:
        images = sum(j.size for j in jobs)
        start = time.monotonic()
        for j in jobs:
            j.started, j.batch_images = start, images
        try:
            results = self._run(jobs)
            error = None
        except BaseException as e:  # delivered to every caller of this batch; the worker keeps running
            results, error = None, e
        end = time.monotonic()
        if any(j.key is not None for j in jobs):  # only sampling calls inform Retry-After
            self._ema_batch_s = 0.8 * self._ema_batch_s + 0.2 * (end - start)
        self.stats.jobs += len(jobs)
        self.stats.batches += 1
        self.stats.images += images
        self.stats.max_batch_seen = max(self.stats.max_batch_seen, images)
        for i, j in enumerate(jobs):
            j.finished = end
            if error is not None:
                j.future.set_exception(error)
            else:
                j.future.set_result(results[i])
