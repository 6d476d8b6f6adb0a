"""Which FAISS index to build for N vectors of dimension D under a memory budget (pure arithmetic).

Rules, first match wins (bytes are resident memory of the loaded index; estimates below):

    N <= flat_max_n and flat fits the budget      -> "Flat"            exact; 4 D bytes/vector
    N <= hnsw_max_n and HNSW fits the budget      -> "HNSW{M}"         4 D + 8 M + 16 bytes/vector
    otherwise                                     -> "IVF{L},PQ{m}x{b}" + refinement:
        disk_refine (default)  -> ",RFlat"  exact re-ranking; the exact vectors are memory-mapped from
                                            disk at load (only ~k_factor * k rows are read per query),
                                            so they do not count against the budget
        exact refinement fits  -> ",RFlat"  (disk_refine=False: vectors resident in RAM)
        8-bit refinement fits  -> ",Refine(SQ8)"
        else                   -> no refinement (lowest recall; recorded in the plan's reason)

Flat and HNSW are always counted as resident: exact search reads every vector per query and HNSW
reads vectors all over the graph, so memory-mapping them saves nothing under load.

Measured by benchmark P4 (`tools/bench/index_bench.py`, clustered 512-d vectors, 2 busy cores,
wall-clock p50 of single queries, recall@10 vs exact on held-out queries, search parameters tuned
to recall 0.96 on other held-out queries):

    n = 100k   Flat 156 ms; HNSW32 0.16 ms @ 0.98 (ef 32); IVF1024,PQ64x8,RFlat 0.11 ms @ 0.95 (tuned to 0.95)
    n = 250k   HNSW32 0.23 ms @ 0.97 (ef 64), 4.3 min build; IVF2048,PQ64x8,RFlat 0.15 ms @ 0.98
    n = 1M     Flat 507 ms; HNSW32 3.8 ms @ 0.94 even at ef 512, 21 min build, 2.3 GB resident;
               IVF2048,PQ64x8,RFlat 0.22 ms @ 0.97 (nprobe 2, k_factor_rf 8), 4 min build, ~76 B resident

HNSW needs ever larger efSearch as n grows (ef 32 -> 512 for 100k -> 1M at the same recall), so it
is chosen only up to HNSW_MAX_N; beyond, IVF-PQ with exact re-ranking meets p50 <= 2 ms at recall@10
>= 0.95 with a fraction of the memory and build time. (Before this measurement HNSW was chosen up to
5M vectors.) RFlat re-ranking reads ~k_factor * k vectors per query from the memory-mapped file: it
is fast while they sit in the page cache, and costs disk reads per query when RAM is short.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from suti.errors import ConfigError, InputError

METRICS = ("ip", "l2")
PQ_SUBQUANTIZERS = (64, 48, 32, 24, 16, 12, 8, 4, 2, 1)
MIN_TRAIN_PER_CENTROID = 39  # FAISS k-means warns below this many training points per centroid
MIN_COMPRESSED_N = 256  # fewer vectors cannot train an IVF-PQ index
FLAT_MAX_N = 100_000
HNSW_MAX_N = 250_000  # benchmark P4: HNSW32 misses p50 <= 2 ms at recall@10 0.95 at 1M vectors


@dataclass(frozen=True)
class IndexPlan:
    """A factory string plus the numbers it was derived from."""

    key: str  # faiss.index_factory string
    kind: str  # "flat" | "hnsw" | "ivfpq"
    n: int
    dim: int
    metric: str
    bytes_per_vector: float  # estimated resident bytes per vector
    estimated_bytes: int
    train_size: int  # vectors to train on (0 for untrained indexes)
    params: dict[str, Any] = field(default_factory=dict)  # nlist, pq_m, pq_nbits, hnsw_m, refine
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_index(n: int, dim: int, metric: str = "ip", memory_budget_bytes: int | None = None,
               flat_max_n: int = FLAT_MAX_N, hnsw_max_n: int = HNSW_MAX_N, hnsw_m: int = 32,
               max_train: int = 100_000, disk_refine: bool = True) -> IndexPlan:  # fmt: skip
    """The index for `n` vectors of `dim` dimensions (ConfigError when nothing fits the budget)."""
    for name, v in (("n", n), ("dim", dim), ("flat_max_n", flat_max_n), ("hnsw_max_n", hnsw_max_n), ("hnsw_m", hnsw_m)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name.endswith("max_n") else 1):
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}, got {metric!r}")
    if memory_budget_bytes is not None and (isinstance(memory_budget_bytes, bool) or memory_budget_bytes <= 0):
        raise InputError(f"memory_budget_bytes must be positive, got {memory_budget_bytes!r}")
    budget = math.inf if memory_budget_bytes is None else int(memory_budget_bytes)
    common = dict(n=n, dim=dim, metric=metric)

    flat_bpv = 4.0 * dim
    if n <= flat_max_n and n * flat_bpv <= budget:
        return IndexPlan("Flat", "flat", bytes_per_vector=flat_bpv, estimated_bytes=int(n * flat_bpv), train_size=0,
                         reason=f"n={n} <= flat_max_n={flat_max_n}: exact search", **common)  # fmt: skip
    hnsw_bpv = 4.0 * dim + 8 * hnsw_m + 16
    if n <= hnsw_max_n and n * hnsw_bpv <= budget:
        why = "over flat_max_n" if n > flat_max_n else "flat over budget"
        return IndexPlan(f"HNSW{hnsw_m}", "hnsw", bytes_per_vector=hnsw_bpv, estimated_bytes=int(n * hnsw_bpv),
                         train_size=0, params={"hnsw_m": hnsw_m},
                         reason=f"{why}; HNSW fits ({n * hnsw_bpv / 1e6:.1f} MB)", **common)  # fmt: skip
    if n < MIN_COMPRESSED_N:
        raise ConfigError(f"memory budget {budget} bytes is below the {int(n * flat_bpv)} bytes a flat index of {n} "
                          f"vectors needs, and {n} vectors are too few to train a compressed index "
                          f"(need >= {MIN_COMPRESSED_N})")  # fmt: skip
    return _plan_ivfpq(n, dim, metric, budget, max_train, disk_refine)


def _plan_ivfpq(n: int, dim: int, metric: str, budget: float, max_train: int, disk_refine: bool) -> IndexPlan:
    train = min(n, max_train)
    nlist = 1 << max(0, int(round(math.log2(max(1.0, 4 * math.sqrt(n))))))
    while nlist > 1 and train < MIN_TRAIN_PER_CENTROID * nlist:
        nlist //= 2
    nbits = max(4, min(8, int(math.log2(max(16, train // MIN_TRAIN_PER_CENTROID)))))
    coarse = nlist * dim * 4
    refine_options = (("RFlat", 0.0 if disk_refine else 4.0 * dim), ("Refine(SQ8)", 1.0 * dim), ("", 0.0))
    # sub-vectors of >= 4 dimensions: PQ is poor below that, and FAISS trains 2-d sub-quantizers ~20x slower
    sizes = [m for m in PQ_SUBQUANTIZERS if dim % m == 0 and m <= max(1, dim // 4)]
    for refine, extra in refine_options:  # refinement matters more than code size: try it first
        for m in sizes:
            bpv = m * nbits / 8 + 8 + extra  # PQ code + 8-byte id in the inverted lists + refinement
            total = n * bpv + coarse
            if total > budget:
                continue
            key = f"IVF{nlist},PQ{m}x{nbits}" + (f",{refine}" if refine else "")
            why = {"RFlat": "exact re-ranking" + (" (vectors memory-mapped from disk)" if disk_refine else ""),
                   "Refine(SQ8)": "8-bit re-ranking", "": "NO re-ranking"}[refine]  # fmt: skip
            return IndexPlan(key, "ivfpq", n=n, dim=dim, metric=metric, bytes_per_vector=bpv,
                             estimated_bytes=int(total), train_size=train,
                             params={"nlist": nlist, "pq_m": m, "pq_nbits": nbits, "refine": refine or None,
                                     "disk_refine": bool(disk_refine and refine == "RFlat")},
                             reason=f"large or tight budget: IVF-PQ with {why}")  # fmt: skip
    smallest = n * (min(sizes) * nbits / 8 + 8) + coarse
    raise ConfigError(f"memory budget {int(budget)} bytes cannot hold {n} vectors of dim {dim} in any index "
                      f"(the smallest IVF-PQ needs about {int(smallest)} bytes)")  # fmt: skip
