"""Pairs -> clusters: group by source page, CLIP-score filters, near-duplicate removal, size limits.

Stages (pure numpy functions of row-aligned arrays; an engine runs the per-row stages on every row
and `filter_group` on the rows of each page group):

1. `group_by_url`      rows -> page group (normalised source URL); unparsable URL => "bad_url"
2. `group_overflow`    a group of more than max_group_rows rows keeps a deterministic pseudo-random
                       sample of that many (`row_priority` order)                 => "group_overflow"
3. `medoid_scores`     cosine of each image to its group's medoid image      < min => "off_medoid"
4. `caption_scores`    cosine of each image to its own caption's embedding   < min => "caption_mismatch"
5. `near_duplicates`   inside a group, in row order (dedup_keep="first") or best medoid cosine
                       first ("best"), an image with cosine >= dedup_cos to an
                       already kept image                                           => "near_duplicate"
6. `size_limits`       groups left with < min_cluster_size rows                 => "small_cluster";
                       groups over max_cluster_size keep their best rows (medoid cosine, then row
                       order)                                                    => "cluster_cap"

Each row gets the first reason that drops it. Kept groups become clusters 0..C-1 (first-seen order).
Stage 2 bounds the work of one group (memory ~ max_group_rows x D floats, dedup ~ max_group_rows^2)
so one huge page cannot exhaust a worker; the Spark engine applies it before shuffling vectors.
Thresholds are cosines of the embedding model in use and must be calibrated per model; the defaults
are an uncalibrated starting point for CLIP-like embeddings.

Engines: `mine(..., engine="local")` (in-process, default) or `engine="spark"` (`retrieval.spark`,
needs pyspark and Java); both give the same row table.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.urls import url_keys
from suti.errors import InputError

ENGINES = ("local", "spark")
REASONS = ("bad_url", "group_overflow", "off_medoid", "caption_mismatch", "near_duplicate", "small_cluster",
           "cluster_cap")
NOISE_REASONS = ("off_medoid", "caption_mismatch", "near_duplicate")  # claims that a row is noise
MEDOID_SAMPLE = 2048  # larger groups find their medoid on a deterministic sample of this many rows


@dataclass(frozen=True)
class MineConfig:
    """Thresholds of the mining stages."""

    min_medoid_cos: float = 0.6
    min_caption_cos: float = 0.2
    dedup_cos: float = 0.94
    min_cluster_size: int = 3
    max_cluster_size: int = 64
    dedup_keep: str = "first"  # which copy of a near-duplicate set survives: "first" (row order) or "best"
    max_group_rows: int = 4096  # a larger page group is sampled down to this many rows first

    def check(self) -> MineConfig:
        for name in ("min_medoid_cos", "min_caption_cos", "dedup_cos"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not -1.0 <= v <= 1.0:
                raise InputError(f"{name} must be a cosine in [-1, 1], got {v!r}")
        for name in ("min_cluster_size", "max_cluster_size", "max_group_rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if self.dedup_keep not in ("first", "best"):
            raise InputError(f"dedup_keep must be 'first' or 'best', got {self.dedup_keep!r}")
        if self.min_cluster_size > self.max_cluster_size:
            raise InputError(f"min_cluster_size {self.min_cluster_size} exceeds "
                             f"max_cluster_size {self.max_cluster_size}")  # fmt: skip
        if self.max_group_rows < self.max_cluster_size:
            raise InputError(f"max_group_rows {self.max_group_rows} is below "
                             f"max_cluster_size {self.max_cluster_size}")  # fmt: skip
        return self


# ---------------------------------------------------------------- stages (pure functions)


def group_by_url(urls: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(group id per row, -1 for an unparsable URL; the normalised URL of each group)."""
    import pandas as pd

    keys, _ = url_keys(urls)
    codes, uniques = pd.factorize(pd.Series(keys, dtype=object), use_na_sentinel=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def _members(group: np.ndarray, rows: np.ndarray | None = None) -> list[np.ndarray]:
    """Row positions of each group (ascending), skipping -1; restricted to `rows` if given."""
    pos = np.arange(len(group)) if rows is None else np.asarray(rows)
    g = group[pos]
    pos, g = pos[g >= 0], g[g >= 0]
    order = np.argsort(g, kind="stable")
    pos, g = pos[order], g[order]
    cuts = np.flatnonzero(np.diff(g)) + 1
    return np.split(pos, cuts) if len(pos) else []


def row_priority(rows: np.ndarray) -> np.ndarray:
    """A pseudo-random, deterministic int64 >= 0 per row number (splitmix64 >> 1): the sampling order."""
    z = np.asarray(rows, dtype=np.int64).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((z ^ (z >> np.uint64(31))) >> np.uint64(1)).astype(np.int64)


def group_overflow(group: np.ndarray, priority: np.ndarray, max_rows: int) -> np.ndarray:
    """Mask of rows beyond the `max_rows` lowest-priority rows (ties by row order) of their group."""
    over = np.zeros(len(group), bool)
    for rows in _members(group):
        if len(rows) > max_rows:
            order = np.lexsort((rows, priority[rows]))
            over[rows[order[max_rows:]]] = True
    return over


def medoid_scores(image: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cosine of each row's image to its group's medoid (the member with the largest summed cosine)."""
    scores = np.full(len(group), np.nan, np.float32)
    for rows in _members(group):
        x = image[rows]
        pool = x
        if len(rows) > MEDOID_SAMPLE:
            pick = np.random.default_rng(len(rows)).choice(len(rows), MEDOID_SAMPLE, replace=False)
            pool = x[np.sort(pick)]
        medoid = pool[int(np.argmax((pool @ pool.T).sum(axis=1)))]
        scores[rows] = x @ medoid
    return scores


def caption_scores(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Cosine of each image to its own caption (row-wise dot product of unit vectors)."""
    return np.einsum("nd,nd->n", image, text).astype(np.float32)


def near_duplicates(image: np.ndarray, group: np.ndarray, candidates: np.ndarray, threshold: float,
                    priority: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Mask of candidate rows that nearly repeat an earlier kept candidate of the same group.

    "Earlier" is row order, or descending `priority` (ties by row order) when it is given.
    """
    dup = np.zeros(len(group), bool)
    for rows in _members(group, np.flatnonzero(candidates)):
        if len(rows) < 2:
            continue
        if priority is not None:
            rows = rows[np.lexsort((rows, -priority[rows]))]
        sims = image[rows] @ image[rows].T
        kept: list[int] = []
        for j in range(len(rows)):
            if kept and sims[j, kept].max() >= threshold:
                dup[rows[j]] = True
            else:
                kept.append(j)
    return dup


def size_limits(group: np.ndarray, keep: np.ndarray, score: np.ndarray, min_size: int,
                max_size: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(rows of groups smaller than min_size, rows beyond the best max_size of a group) among `keep`."""
    small = np.zeros(len(group), bool)
    capped = np.zeros(len(group), bool)
    for rows in _members(group, np.flatnonzero(keep)):
        if len(rows) < min_size:
            small[rows] = True
        elif len(rows) > max_size:
            order = np.lexsort((rows, -score[rows]))  # best score first, ties by row order
            capped[rows[order[max_size:]]] = True
    return small, capped


def filter_group(image: np.ndarray, caption_cos: np.ndarray, config: MineConfig) -> tuple[np.ndarray, np.ndarray]:
    """Stages 3-6 on the rows of ONE page group, in row order: (medoid cosine, reason or "") per row.

    Every engine calls this once per group, so their results agree row for row.
    """
    one = np.zeros(len(image), np.int64)
    reason = np.full(len(image), "", dtype=object)

    def drop(mask: np.ndarray, why: str) -> None:
        reason[mask & (reason == "")] = why

    med = medoid_scores(image, one)
    drop(~(med >= config.min_medoid_cos), "off_medoid")
    drop(caption_cos < config.min_caption_cos, "caption_mismatch")
    priority = med if config.dedup_keep == "best" else None
    drop(near_duplicates(image, one, reason == "", config.dedup_cos, priority), "near_duplicate")
    small, capped = size_limits(one, reason == "", med, config.min_cluster_size, config.max_cluster_size)
    drop(small, "small_cluster")
    drop(capped, "cluster_cap")
    return med, reason


# ---------------------------------------------------------------- the in-process engine


@dataclass
class MineResult:
    """Row-level outcome (aligned with the input rows) plus summary statistics."""

    table: Any  # pandas.DataFrame: url_key, group, medoid_cos, caption_cos, kept, reason, cluster_id
    stats: dict[str, Any]

    @property
    def kept(self) -> np.ndarray:
        return self.table["kept"].to_numpy(bool)

    @property
    def flagged_noise(self) -> np.ndarray:
        """Rows that a filter declared noise (size limits and bad URLs are not noise claims)."""
        return self.table["reason"].isin(NOISE_REASONS).to_numpy()

    def kept_rows(self, metadata) -> Any:
        """The kept rows of `metadata` (aligned with the mined rows) with cluster ids and scores."""
        if len(metadata) != len(self.table):
            raise InputError(f"metadata has {len(metadata)} rows, mining saw {len(self.table)}")
        cols = ["cluster_id", "url_key", "medoid_cos", "caption_cos"]
        joined = metadata.reset_index(drop=True).drop(columns=[c for c in cols if c in metadata.columns])
        joined = joined.join(self.table[cols])
        return joined[self.kept].reset_index(drop=True)

    def clusters(self, metadata) -> Any:
        """One row per cluster: cluster_id, url, size, member positions, ids and captions."""
        rows = self.kept_rows(metadata.assign(_row=np.arange(len(metadata))))
        grouped = rows.groupby("cluster_id", sort=True)
        out = grouped.agg(url=("url_key", "first"), size=("_row", "size"), rows=("_row", list))
        for col in ("id", "caption"):
            if col in rows.columns:
                out[col + "s"] = grouped[col].agg(list)
        return out.reset_index()

    def to_dataset(self, metadata, level: str = "rows"):
        """A `datasets.Dataset` of the kept rows (level="rows") or of the clusters (level="clusters")."""
        import datasets

        if level not in ("rows", "clusters"):
            raise InputError(f"level must be 'rows' or 'clusters', got {level!r}")
        frame = self.kept_rows(metadata) if level == "rows" else self.clusters(metadata)
        return datasets.Dataset.from_pandas(frame, preserve_index=False)

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write `mine_rows.parquet` (row-level table) and `mine_stats.json` atomically."""
        from retrieval.atomic import write_json, write_parquet

        out = Path(out_dir)
        write_parquet(out / "mine_rows.parquet", self.table)
        write_json(out / "mine_stats.json", self.stats)
        return out


def mine(image: np.ndarray, text: np.ndarray, urls: Sequence[str], config: MineConfig | None = None,
         engine: str = "local", **engine_options: Any) -> MineResult:  # fmt: skip
    """Run all stages on row-aligned image embeddings, caption embeddings and source URLs.

    engine="spark" runs them on Spark (`retrieval.spark.mine_spark`; options: spark=SparkSession,
    master="local[2]", partitions=...); the result is the same.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "spark":
        from retrieval.spark import mine_spark

        return mine_spark(image, text, urls, config, **engine_options)
    if engine_options:
        raise InputError(f"the local engine takes no options, got {sorted(engine_options)}")
    config = (config or MineConfig()).check()
    image, text = check_arrays(image, text, len(urls))
    group, keys = group_by_url(urls)
    cap = caption_scores(image, text)
    over = group_overflow(group, row_priority(np.arange(len(group))), config.max_group_rows)
    reason = np.where(group < 0, "bad_url", np.where(over, "group_overflow", "")).astype(object)
    med = np.full(len(group), np.nan, np.float32)
    for rows in _members(group, np.flatnonzero(reason == "")):
        med[rows], reason[rows] = filter_group(image[rows], cap[rows], config)
    return assemble(keys, group, med, cap, reason, config)


def assemble(keys: Sequence[str], group: np.ndarray, med: np.ndarray, cap: np.ndarray, reason: np.ndarray,
             config: MineConfig) -> MineResult:  # fmt: skip
    """The row table (cluster ids 0..C-1 in order of each kept group's first row) and its stats."""
    import pandas as pd

    kept = reason == ""
    cluster_id = np.full(len(group), -1, np.int64)
    codes, _ = pd.factorize(group[kept])
    cluster_id[kept] = codes
    table = pd.DataFrame({
        "url_key": [keys[g] if g >= 0 else None for g in group],
        "group": group,
        "medoid_cos": med,
        "caption_cos": cap,
        "kept": kept,
        "reason": reason.astype(str),
        "cluster_id": cluster_id,
    })  # fmt: skip
    return MineResult(table, _stats(table, config, len(keys)))


def check_arrays(image: np.ndarray, text: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image, dtype=np.float32)
    text = np.asarray(text, dtype=np.float32)
    if image.ndim != 2 or text.shape != image.shape:
        raise InputError(f"image and text embeddings must both be (N, D), got {image.shape} and {text.shape}")
    if len(image) != n:
        raise InputError(f"{len(image)} embeddings but {n} URLs")
    if not (np.isfinite(image).all() and np.isfinite(text).all()):
        raise InputError("embeddings contain NaN or infinity")
    return image, text


def _stats(table, config: MineConfig, groups: int) -> dict[str, Any]:
    sizes = table.loc[table["kept"], "cluster_id"].value_counts()
    dropped = {r: int((table["reason"] == r).sum()) for r in REASONS}
    return {
        "rows": len(table),
        "kept": int(table["kept"].sum()),
        "dropped": dropped,
        "groups": groups,
        "clusters": int(len(sizes)),
        "cluster_size": {
            "min": int(sizes.min()) if len(sizes) else 0,
            "median": float(sizes.median()) if len(sizes) else 0.0,
            "max": int(sizes.max()) if len(sizes) else 0,
        },
        "config": asdict(config),
    }


def noise_removal_metrics(flagged: np.ndarray, is_noise: np.ndarray, noise_kind: Sequence[str] | None = None,
                          duplicate_of: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """Precision and recall of noise removal against ground-truth noise flags.

    precision = flagged noise / flagged (1.0 when nothing is flagged); recall = flagged noise / noise
    (1.0 when there is no noise). With `noise_kind`, recall per kind of noise as well.

    `duplicate_of[i]` (row of the original that noise row i nearly duplicates, else -1) makes the
    count pair-aware: of an original and its copy, removing either one removes the redundancy, so a
    flagged original whose copy was kept counts as if the copy had been flagged instead.
    """
    flagged = np.asarray(flagged, bool).copy()
    truth = np.asarray(is_noise, bool)
    if flagged.shape != truth.shape or flagged.ndim != 1:
        raise InputError(f"flagged {flagged.shape} and is_noise {truth.shape} must be equal-length 1-D arrays")
    if duplicate_of is not None:
        dup_of = np.asarray(duplicate_of, np.int64)
        if dup_of.shape != truth.shape or (dup_of >= len(truth)).any():
            raise InputError(f"duplicate_of must hold {len(truth)} row numbers (or -1)")
        for copy in np.flatnonzero((dup_of >= 0) & truth & ~flagged):
            original = dup_of[copy]
            if flagged[original] and not truth[original]:
                flagged[copy], flagged[original] = True, False
    tp = int((flagged & truth).sum())
    fp = int((flagged & ~truth).sum())
    fn = int((~flagged & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    out: dict[str, Any] = {
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }
    if noise_kind is not None:
        kinds = np.asarray(noise_kind, dtype=object)
        if kinds.shape != truth.shape:
            raise InputError(f"noise_kind has {len(kinds)} entries, expected {len(truth)}")
        out["per_kind"] = {}
        for kind in sorted({k for k, t in zip(kinds, truth) if t and k}):
            sel = truth & (kinds == kind)
            out["per_kind"][kind] = {"n": int(sel.sum()), "removed": int((flagged & sel).sum()),
                                     "recall": float((flagged & sel).sum() / sel.sum())}  # fmt: skip
    return out
