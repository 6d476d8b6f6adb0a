"""`index_infos.json`: the provenance written beside every index (autofaiss style), and its reader."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retrieval.errors import IndexLoadError

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
INFOS_FILE = "index_infos.json"
METADATA_FILE = "metadata.parquet"
_SHA256_LEN = 64


@dataclass
class IndexInfos:
    """Everything needed to trust, reproduce and use an index file."""

    index_key: str  # faiss.index_factory string
    index_type: str  # e.g. IndexHNSWFlat
    kind: str  # flat | hnsw | ivfpq (planned) | ivf | custom (index_key given)
    metric: str  # ip | l2
    n_vectors: int
    dim: int
    file_bytes: int
    bytes_per_vector: float  # file bytes / n_vectors
    sha256: str
    search_params: dict[str, Any] = field(default_factory=dict)  # e.g. {"efSearch": 64}
    build_params: dict[str, Any] = field(default_factory=dict)  # nlist, pq_m, pq_nbits, hnsw_m, refine
    selection: dict[str, Any] = field(default_factory=dict)  # reason, memory budget, estimated bytes
    train_size: int = 0
    train_seconds: float = 0.0
    add_seconds: float = 0.0
    build_seconds: float = 0.0
    evaluation: dict[str, Any] = field(default_factory=dict)  # recall_at_k, latency_ms_*, queries, tuning
    metadata: dict[str, Any] = field(default_factory=dict)  # file, rows, sha256 (when written)
    created_by: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    index_file: str = INDEX_FILE
    format_version: int = FORMAT_VERSION

    @property
    def search_params_string(self) -> str:
        """The FAISS ParameterSpace string of `search_params` ("nprobe=16,k_factor_rf=8")."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.search_params.items()))

    @classmethod
    def create(cls, plan, index_type: str, file_bytes: int, sha256: str, search_params: dict[str, Any],
               memory_budget_bytes: int | None, train_seconds: float, add_seconds: float, build_seconds: float,
               evaluation: dict[str, Any], metadata: dict[str, Any]) -> IndexInfos:  # fmt: skip
        import faiss
        import numpy as np

        from suti import __version__

        return cls(
            index_key=plan.key, index_type=index_type, kind=plan.kind, metric=plan.metric, n_vectors=plan.n,
            dim=plan.dim, file_bytes=file_bytes, bytes_per_vector=round(file_bytes / plan.n, 2), sha256=sha256,
            search_params=search_params, build_params=dict(plan.params),
            selection={"reason": plan.reason, "memory_budget_bytes": memory_budget_bytes,
                       "estimated_memory_bytes": plan.estimated_bytes},
            train_size=plan.train_size, train_seconds=round(train_seconds, 4), add_seconds=round(add_seconds, 4),
            build_seconds=round(build_seconds, 4), evaluation=evaluation, metadata=metadata,
            created_by={"package": "suti-engine", "version": __version__, "faiss": faiss.__version__,
                        "numpy": np.__version__},
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = INFOS_FILE) -> IndexInfos:
        """Parse and type-check; IndexLoadError naming the first bad field."""
        if not isinstance(d, dict):
            raise IndexLoadError(f"{where} must hold a JSON object")
        required = {"index_key": str, "index_type": str, "kind": str, "metric": str, "n_vectors": int, "dim": int,
                    "file_bytes": int, "sha256": str}  # fmt: skip
        for key, typ in required.items():
            if key not in d:
                raise IndexLoadError(f"{where} has no {key!r}")
            if not isinstance(d[key], typ) or isinstance(d[key], bool):
                raise IndexLoadError(f"{where}: {key!r} must be {typ.__name__}, got {d[key]!r}")
        if d["metric"] not in ("ip", "l2"):
            raise IndexLoadError(f"{where}: unknown metric {d['metric']!r}")
        if d["n_vectors"] < 1 or d["dim"] < 1 or d["file_bytes"] < 1 or len(d["sha256"]) != _SHA256_LEN:
            raise IndexLoadError(f"{where}: n_vectors, dim, file_bytes must be positive and sha256 64 hex digits")
        if d.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise IndexLoadError(f"{where} has format_version {d['format_version']}, newer than this code "
                                 f"({FORMAT_VERSION}); upgrade suti-engine")  # fmt: skip
        index_file = d.get("index_file", INDEX_FILE)
        if not isinstance(index_file, str) or Path(index_file).name != index_file:
            raise IndexLoadError(f"{where}: index_file must be a plain file name, got {index_file!r}")
        for key in ("search_params", "build_params", "selection", "evaluation", "metadata", "created_by"):
            if not isinstance(d.get(key, {}), dict):
                raise IndexLoadError(f"{where}: {key!r} must be an object")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def read_infos(index_dir: str | os.PathLike) -> IndexInfos:
    """The infos of an index directory (IndexLoadError when missing or malformed)."""
    path = Path(index_dir) / INFOS_FILE
    if not path.is_file():
        raise IndexLoadError(f"{path} is missing: not an index directory, or the build did not finish")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IndexLoadError(f"{path} is not readable JSON ({e})") from e
    return IndexInfos.from_dict(data, where=str(path))
