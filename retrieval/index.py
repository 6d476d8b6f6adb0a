"""FAISS index: build (chosen by size and memory budget), tune, write atomically, load verified + mmapped.

An index directory holds

    index.faiss         the FAISS index (row i = vector i = metadata row i)
    metadata.parquet    optional, row-aligned metadata
    index_infos.json    written last: factory key, params, sizes, build time, measured recall and
                        latency against exact search, sha256 of index.faiss and metadata.parquet

`load_index` checks size and checksum before FAISS parses a byte, so a truncated or corrupt file is a
typed error (`IndexCorruptError`), never a crash inside FAISS.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.atomic import sha256_file, write_json, write_parquet
from retrieval.errors import IndexCorruptError, IndexLoadError, IndexMismatchError
from retrieval.index_infos import INDEX_FILE, INFOS_FILE, METADATA_FILE, IndexInfos, read_infos
from retrieval.index_plan import FLAT_MAX_N, HNSW_MAX_N, IndexPlan, plan_index
from retrieval.index_tune import evaluate, tune
from suti.errors import InputError

ADD_CHUNK = 65_536


def check_vectors(vectors: Any, name: str = "vectors") -> np.ndarray:
    """A C-contiguous float32 (N, D) array with finite values, or InputError."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise InputError(f"{name} must be a non-empty (N, D) array, got shape {x.shape}")
    for a in range(0, len(x), ADD_CHUNK):
        if not np.isfinite(x[a : a + ADD_CHUNK]).all():
            raise InputError(f"{name} contain NaN or infinity (rows {a}..{min(a + ADD_CHUNK, len(x)) - 1})")
    return x


def _faiss_metric(metric: str):
    import faiss

    return {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}[metric]


def build_index(vectors: Any, out_dir: str | os.PathLike, metric: str = "ip", memory_budget_bytes: int | None = None,
                *, metadata: Any = None, queries: Any = None, k: int = 10, target_recall: float = 0.95,
                n_queries: int = 200, index_key: str | None = None, flat_max_n: int = FLAT_MAX_N,
                hnsw_max_n: int = HNSW_MAX_N, disk_refine: bool = True, refine_k_factor: int = 8,
                seed: int = 0) -> IndexInfos:  # fmt: skip
    """Build, tune, measure and write an index over `vectors`; returns what `index_infos.json` holds.

    The index type comes from `plan_index` (or `index_key`, a FAISS factory string); the memory
    budget is the resident size when serving with `load_index(mmap=True)`, not the build's memory
    (building holds `vectors` plus the index in RAM). Search parameters
    (efSearch, nprobe) are the cheapest that reach `target_recall` at `k` on held-out `queries`
    (default: `n_queries` database rows; pass real queries, e.g. text embeddings, when you have them).
    """
    import faiss

    x = check_vectors(vectors)
    n, dim = x.shape
    if metadata is not None and len(metadata) != n:
        raise InputError(f"metadata has {len(metadata)} rows but there are {n} vectors (they must be row-aligned)")
    plan = plan_index(n, dim, metric, memory_budget_bytes, flat_max_n=flat_max_n, hnsw_max_n=hnsw_max_n,
                      disk_refine=disk_refine)  # fmt: skip
    if index_key is not None:
        plan = _plan_from_key(index_key, plan)
    rng = np.random.default_rng(seed)
    if queries is None:
        q = x[np.sort(rng.choice(n, min(n, n_queries), replace=False))]
        queries_source = "database_sample"
    else:
        q = check_vectors(queries, "queries")
        queries_source = "given"
        if q.shape[1] != dim:
            raise InputError(f"queries have dim {q.shape[1]}, vectors have dim {dim}")

    t0 = time.perf_counter()
    try:
        index = faiss.index_factory(dim, plan.key, _faiss_metric(metric))
    except RuntimeError as e:
        raise InputError(f"FAISS cannot build index {plan.key!r}: {str(e).splitlines()[-1]}") from e
    if plan.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = 80
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
        faiss.downcast_index(ivf).do_polysemous_training = False  # slow, and unused by IVF-PQ search here
    train_seconds = 0.0
    if not index.is_trained:
        size = plan.train_size or min(n, 100_000)
        sample = x if size >= n else x[np.sort(rng.choice(n, size, replace=False))]
        index.train(sample)
        train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    for a in range(0, n, ADD_CHUNK):
        index.add(x[a : a + ADD_CHUNK])
    add_seconds = time.perf_counter() - t1

    truth = faiss.knn(q, x, min(k, n), metric=_faiss_metric(metric))[1]
    params, tuning = tune(index, plan, q, truth, target_recall, refine_k_factor)
    measured = evaluate(index, q, truth)
    build_seconds = time.perf_counter() - t0

    out = Path(out_dir)
    meta_info: dict[str, Any] = {}
    if metadata is not None:
        write_parquet(out / METADATA_FILE, metadata.reset_index(drop=True))
        meta_info = {"file": METADATA_FILE, "rows": int(len(metadata)), "sha256": sha256_file(out / METADATA_FILE)}
    size, digest = _write_index(index, out / INDEX_FILE)
    infos = IndexInfos.create(
        plan=plan, index_type=type(faiss.downcast_index(index)).__name__, file_bytes=size, sha256=digest,
        search_params=params, memory_budget_bytes=memory_budget_bytes, train_seconds=train_seconds,
        add_seconds=add_seconds, build_seconds=build_seconds,
        evaluation={"k": int(truth.shape[1]), "n_queries": int(len(q)), "queries": queries_source,
                    "target_recall": target_recall, "target_reached": bool(measured["recall"] >= target_recall),
                    "recall_at_k": measured["recall"], "latency_ms_median": measured["latency_ms_median"],
                    "latency_ms_p95": measured["latency_ms_p95"], "tuning": tuning},
        metadata=meta_info,
    )  # fmt: skip
    write_json(out / INFOS_FILE, infos.to_dict())
    return infos


def _plan_from_key(key: str, auto: IndexPlan) -> IndexPlan:
    kind = "flat" if key == "Flat" else "hnsw" if key.startswith("HNSW") else "ivf" if "IVF" in key else "custom"
    train = 0 if kind in ("flat", "hnsw") else min(auto.n, 100_000)
    return IndexPlan(key, kind, n=auto.n, dim=auto.dim, metric=auto.metric, bytes_per_vector=float("nan"),
                     estimated_bytes=-1, train_size=train, params={},
                     reason="index_key given by the caller")  # fmt: skip


def _write_index(index, path: Path) -> tuple[int, str]:
    """faiss.write_index to a temporary file beside `path`, fsync, checksum, rename."""
    import faiss

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        size, digest = os.path.getsize(tmp), sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size, digest


@dataclass
class LoadedIndex:
    """A verified FAISS index with its infos; `search` checks the query's shape first."""

    index: Any
    infos: IndexInfos
    directory: Path
    mmapped: bool

    @property
    def dim(self) -> int:
        return self.infos.dim

    def __len__(self) -> int:
        return self.infos.n_vectors

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (Q, k); rows are -1 where fewer than k results exist."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        q = check_vectors(np.atleast_2d(queries), "queries")
        if q.shape[1] != self.dim:
            raise InputError(f"query has dim {q.shape[1]}, the index has dim {self.dim}")
        return self.index.search(q, int(k))

    def reconstruct(self, rows: np.ndarray) -> np.ndarray | None:
        """Stored vectors of `rows` (exact for flat storage), or None if this index type cannot."""
        try:
            return self.index.reconstruct_batch(np.asarray(rows, dtype=np.int64))
        except RuntimeError:
            return None


def load_index(index_dir: str | os.PathLike, mmap: bool = True, verify: bool = True,
               expected_dim: int | None = None) -> LoadedIndex:  # fmt: skip
    """Load an index directory written by `build_index`, verifying it before FAISS reads it.

    `mmap` maps flat codes (IO_FLAG_MMAP_IFC) or inverted lists (IO_FLAG_MMAP) read-only instead of
    copying them to RAM. `verify=False` skips the sha256 (the size is still checked).
    """
    import faiss

    directory = Path(index_dir)
    if not directory.is_dir():
        raise IndexLoadError(f"index directory {directory} not found")
    infos = read_infos(directory)
    path = directory / infos.index_file
    if not path.is_file():
        raise IndexLoadError(f"index file {path} is missing (index_infos.json names it)")
    size = path.stat().st_size
    if size != infos.file_bytes:
        raise IndexCorruptError(f"{path} has {size} bytes but index_infos.json records {infos.file_bytes}: "
                                "the file is truncated or was replaced")  # fmt: skip
    if verify and sha256_file(path) != infos.sha256:
        raise IndexCorruptError(f"{path} fails its sha256 check against index_infos.json: the file is corrupt")
    if expected_dim is not None and expected_dim != infos.dim:
        raise IndexMismatchError(f"index {directory} has dim {infos.dim}, expected {expected_dim}")
    index, mmapped = None, False
    if mmap:
        # IFC maps flat codes (Flat, HNSW storage, refinement vectors); MMAP maps IVF inverted lists.
        # FAISS cannot combine them, so map whichever holds the bulk of the bytes.
        key = infos.index_key
        lists_only = "IVF" in key and "RFlat" not in key and "Refine" not in key
        flags = (faiss.IO_FLAG_MMAP if lists_only else faiss.IO_FLAG_MMAP_IFC) | faiss.IO_FLAG_READ_ONLY
        try:
            index, mmapped = faiss.read_index(str(path), flags), True
        except RuntimeError:
            index = None  # this index type cannot be mapped: read it into memory below
    if index is None:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise IndexCorruptError(f"FAISS cannot read {path}: {str(e).splitlines()[-1]}") from e
    _check_loaded(index, infos, path)
    if infos.search_params_string:
        faiss.ParameterSpace().set_index_parameters(index, infos.search_params_string)
    return LoadedIndex(index, infos, directory, mmapped)


def _check_loaded(index, infos: IndexInfos, path: Path) -> None:
    if index.d != infos.dim:
        raise IndexMismatchError(f"{path} has dim {index.d} but index_infos.json records {infos.dim}")
    if index.ntotal != infos.n_vectors:
        raise IndexMismatchError(f"{path} holds {index.ntotal} vectors but index_infos.json records {infos.n_vectors}")
    if index.metric_type != _faiss_metric(infos.metric):
        raise IndexMismatchError(f"{path} uses FAISS metric {index.metric_type}, infos say {infos.metric!r}")
