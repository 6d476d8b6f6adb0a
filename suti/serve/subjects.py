"""The subject store: server-generated ids -> cached demo tokens (memory LRU in front of safetensors files).

    store = SubjectStore(root, fingerprint, cache_items=256, max_subjects=10_000)
    record = store.add(ctx, n_images=3, captions=[...])    # id like "sub_1f0c...": 24 random hex digits
    ctx, record = store.get(record.subject_id)              # memory hit, else disk (then cached), else 404

Layout: ROOT/<weights fingerprint[:16]>/<subject_id>.safetensors holding `tokens` (1, M, D), `mask`
(1, M) and, for models whose demo tokens have places, `positions` (1, M, 3), with the record as JSON
metadata. Files of another model's weights are never read (their tokens would be meaningless). Ids are
checked against a strict pattern before any path is built, so no client-supplied text ever reaches the
filesystem. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from suti.serve.errors import InvalidInput, NotFound, StoreFull

ID_PATTERN = re.compile(r"sub_[0-9a-f]{24}")
SUFFIX = ".safetensors"


@dataclass
class SubjectRecord:
    subject_id: str
    n_images: int
    captions: list[str]
    created_at: float
    tokens: int  # M, the demo token count
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StoreStats:
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    added: int = 0
    deleted: int = 0


def check_subject_id(subject_id: object) -> str:
    """The id if it has the server's exact shape; else a 422 naming the expected shape (never a path)."""
    if not isinstance(subject_id, str) or not ID_PATTERN.fullmatch(subject_id):
        shown = repr(subject_id)[:40] if isinstance(subject_id, str) else type(subject_id).__name__
        raise InvalidInput(f"subject_id {shown} is not a subject id (expected 'sub_' + 24 hex digits, as returned "
                           "by POST /v1/subjects)", code="invalid_subject_id")
    return subject_id


class SubjectStore:
    def __init__(self, root: str | os.PathLike, fingerprint: str, cache_items: int = 256, max_subjects: int = 10_000):
        self.dir = Path(root) / fingerprint[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cache_items = int(cache_items)
        self.max_subjects = int(max_subjects)
        self.stats = StoreStats()
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, tuple] = OrderedDict()  # id -> (DemoContext, SubjectRecord), LRU order
        self._count = sum(1 for p in self.dir.iterdir() if p.suffix == SUFFIX and ID_PATTERN.fullmatch(p.stem))

    def __len__(self) -> int:
        return self._count

    def _path(self, subject_id: str) -> Path:
        return self.dir / f"{check_subject_id(subject_id)}{SUFFIX}"

    # -- write ---------------------------------------------------------------------------------------------
    def add(self, ctx, n_images: int, captions: list[str], warnings: list[str] | None = None) -> SubjectRecord:
        from safetensors.torch import save

        from retrieval.atomic import atomic_write

        with self._lock:
            if self._count >= self.max_subjects:
                raise StoreFull(f"the subject store is full ({self.max_subjects} subjects); delete some first")
            self._count += 1  # reserved now, so concurrent adds cannot overshoot the cap
        record = SubjectRecord(f"sub_{secrets.token_hex(12)}", int(n_images), list(captions), round(time.time(), 3),
                               int(ctx.tokens.shape[1]), list(warnings or []))
        tensors = {"tokens": ctx.tokens.contiguous(), "mask": ctx.full_mask().contiguous()}
        if ctx.positions is not None:
            tensors["positions"] = ctx.positions.contiguous()
        try:
            blob = save(tensors, metadata={"record": json.dumps(record.to_dict())})
            atomic_write(self._path(record.subject_id), lambda f: f.write(blob))
        except BaseException:
            with self._lock:
                self._count -= 1
            raise
        with self._lock:
            self._remember(record.subject_id, (ctx, record))
            self.stats.added += 1
        return record

    def delete(self, subject_id: str) -> None:
        path = self._path(subject_id)
        with self._lock:
            self._memory.pop(subject_id, None)
            try:
                path.unlink()
            except FileNotFoundError:
                raise NotFound(f"no subject {subject_id!r}", code="subject_not_found") from None
            self._count -= 1
            self.stats.deleted += 1

    # -- read ----------------------------------------------------------------------------------------------
    def get(self, subject_id: str):
        """(DemoContext (1, M, D), SubjectRecord); NotFound for an unknown id."""
        path = self._path(subject_id)
        with self._lock:
            hit = self._memory.get(subject_id)
            if hit is not None:
                self._memory.move_to_end(subject_id)
                self.stats.memory_hits += 1
                return hit
        item = self._load(path, subject_id)
        with self._lock:
            self.stats.disk_hits += 1
            self._remember(subject_id, item)
        return item

    def record(self, subject_id: str) -> SubjectRecord:
        """The record only (from memory, or the file's metadata header without reading the tensors)."""
        from safetensors import safe_open

        path = self._path(subject_id)
        with self._lock:
            hit = self._memory.get(subject_id)
            if hit is not None:
                return hit[1]
        try:
            with safe_open(str(path), framework="pt") as f:
                return SubjectRecord(**json.loads(f.metadata()["record"]))
        except FileNotFoundError:
            self.stats.misses += 1
            raise NotFound(f"no subject {subject_id!r}", code="subject_not_found") from None

    def _load(self, path: Path, subject_id: str):
        from safetensors import safe_open

        from suti.models.subject_attn import DemoContext

        try:
            with safe_open(str(path), framework="pt") as f:
                record = SubjectRecord(**json.loads(f.metadata()["record"]))
                pos = f.get_tensor("positions") if "positions" in f.keys() else None
                ctx = DemoContext(f.get_tensor("tokens"), f.get_tensor("mask"), None, pos)
        except FileNotFoundError:
            self.stats.misses += 1
            raise NotFound(f"no subject {subject_id!r}", code="subject_not_found") from None
        return ctx, record

    def _remember(self, subject_id: str, item: tuple) -> None:
        self._memory[subject_id] = item
        self._memory.move_to_end(subject_id)
        while len(self._memory) > self.cache_items:
            self._memory.popitem(last=False)

    def memory_ids(self) -> list[str]:
        with self._lock:
            return list(self._memory)

