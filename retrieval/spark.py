"""The Spark engine of `retrieval.mine`: the same stage functions, run on a Spark cluster.

    result = mine(image, text, urls, config, engine="spark", master="local[2]")   # arrays in, MineResult out
    rows = mine_frame(spark.read.parquet("pairs/"), config)                       # web scale: DataFrame in/out

Plan (the input frame has columns row: long, url: string, image: array<float>, text: array<float>):

1. per row (mapInPandas, no shuffle): url_key = `normalize_url`, caption_cos = `caption_scores`,
   priority = `row_priority`; the caption vector is dropped here.
2. capped-group shuffle: only the narrow columns (row, url_key, priority) are shuffled by page and
   ranked by (priority, row); rows ranked beyond `max_group_rows` are "group_overflow". A huge page
   costs 24 bytes per row in this shuffle (a spillable sort), never its vectors.
3. the image vectors of the rows that survive step 2 are shuffled by page (a semi-join on row picks
   them) and each group - at most `max_group_rows` rows - goes to `filter_group` (applyInPandas).
   Worker memory per group is bounded: ~max_group_rows x D x 4 bytes of vectors plus a
   max_group_rows^2 float32 similarity matrix (4096 rows, D 512: ~8 MB + 64 MB).
4. group ids and cluster ids: pages ranked by their first row (first kept row), as the local engine.

Why sample (step 2) rather than salt-and-split big groups: the medoid and the near-duplicate test
are properties of a whole group, so splitting a group changes the result with the split, and
merging the parts needs another pass; a cluster keeps at most `max_cluster_size` rows anyway, so a
pseudo-random sample of max_group_rows rows (>= max_cluster_size) finds the page's medoid and fills
the cluster just as well. The local engine applies the same sample, so both engines agree.

pyspark is an optional dependency (`pip install 'suti-engine[spark]'`, plus Java 17+); it is
imported only here.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from retrieval.mine import (
    MineConfig,
    MineResult,
    assemble,
    caption_scores,
    check_arrays,
    filter_group,
    row_priority,
)
from retrieval.urls import url_keys
from suti.errors import ConfigError

WRITE_CHUNK = 65_536  # rows per parquet row group when arrays are handed to Spark


def spark_session(master: str = "local[2]", partitions: int | None = None, app_name: str = "suti-mine"):
    """The active SparkSession, or a new one on `master` (ConfigError without pyspark or Java)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:
        raise ConfigError("the Spark engine needs pyspark: pip install 'suti-engine[spark]'") from e
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise ConfigError("the Spark engine needs Java 17+ (no `java` on PATH and JAVA_HOME is unset)")
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.pyspark.python", sys.executable)  # workers run this interpreter (and see `retrieval`)
        .config("spark.pyspark.driver.python", sys.executable)
    )
    if partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(int(partitions)))
    try:
        return builder.getOrCreate()
    except Exception as e:  # the JVM failed to start: py4j/pyspark raise several types here
        raise ConfigError(f"cannot start Spark on {master!r}: {str(e).splitlines()[0]}") from e


# ---------------------------------------------------------------- the distributed plan


def _prepare(batches: Iterator[Any]) -> Iterator[Any]:
    """Step 1, per Arrow batch: url_key, caption_cos, priority (the text vectors stop here)."""
    import pandas as pd

    for batch in batches:
        image = _stack(batch["image"])  # (n, D)
        keys, _ = url_keys(batch["url"].tolist())
        yield pd.DataFrame({
            "row": batch["row"].to_numpy(np.int64),
            "url_key": pd.Series(keys, dtype=object),
            "caption_cos": caption_scores(image, _stack(batch["text"], image.shape)),
            "priority": row_priority(batch["row"].to_numpy(np.int64)),
            "image": list(image),
        })  # fmt: skip


def _stack(column, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A pandas column of equal-length float arrays as one (n, D) float32 array."""
    if len(column) == 0:
        return np.zeros(shape or (0, 0), np.float32)
    return np.stack(column.to_numpy()).astype(np.float32, copy=False)


def _group_filter(config: MineConfig):
    """Step 3 as an applyInPandas function: the rows of one page -> (row, medoid_cos, reason)."""
    import pandas as pd

    def run(frame):
        frame = frame.sort_values("row", kind="stable")  # row order, as the local engine sees the group
        image = _stack(frame["image"])  # (rows of the page <= max_group_rows, D)
        med, reason = filter_group(image, frame["caption_cos"].to_numpy(np.float32), config)
        return pd.DataFrame({"row": frame["row"].to_numpy(np.int64), "medoid_cos": med,
                             "reason": reason.astype(str)})  # fmt: skip

    return run


def _rank(frame, key: str, order: str, name: str):
    """(key, name): keys numbered 0.. by ascending `order`.

    A global window moves the (key, order) pairs - one per page, not per row - to one partition,
    which sorts them with spilling; a distributed sort + zipWithIndex costs three extra jobs.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    return frame.select(key, (F.row_number().over(Window.orderBy(order)) - 1).alias(name))


def mine_frame(frame, config: MineConfig | None = None):
    """Mine a Spark DataFrame of pairs (row, url, image, text) -> one output row per input row.

    Output columns: row, url_key, group, medoid_cos, caption_cos, reason ("" = kept), cluster_id.
    `row` must be unique; it orders pages (first-seen) and the pseudo-random sample of big pages.
    Two intermediate frames stay persisted (memory and disk) until `spark.catalog.clearCache()`.
    """
    return _plan(frame, config)[0]


def _plan(frame, config: MineConfig | None):
    """(output frame, the frames it persisted)."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    config = (config or MineConfig()).check()
    missing = {"row", "url", "image", "text"} - set(frame.columns)
    if missing:
        raise ConfigError(f"mine_frame needs columns row, url, image, text; missing {sorted(missing)}")
    prepared = frame.select("row", "url", "image", "text").mapInPandas(
        _prepare, "row long, url_key string, caption_cos float, priority long, image array<float>"
    ).persist(StorageLevel.MEMORY_AND_DISK)  # read twice: narrow ranking and the vector shuffle

    narrow = prepared.select("row", "url_key", "caption_cos", "priority")
    by_page = Window.partitionBy("url_key").orderBy("priority", "row")
    sampled = (narrow.where(F.col("url_key").isNotNull())
               .withColumn("rank", F.row_number().over(by_page))
               .where(F.col("rank") <= config.max_group_rows).select("row"))  # fmt: skip
    vectors = prepared.join(sampled, "row", "left_semi")
    filtered = vectors.groupBy("url_key").applyInPandas(
        _group_filter(config), "row long, medoid_cos float, reason string"
    )

    rows = narrow.join(filtered, "row", "left").select(
        "row", "url_key", "caption_cos", "medoid_cos",
        F.when(F.col("url_key").isNull(), F.lit("bad_url"))
        .when(F.col("reason").isNull(), F.lit("group_overflow"))
        .otherwise(F.col("reason")).alias("reason"),
    ).persist(StorageLevel.MEMORY_AND_DISK)  # read three times: page ranks, cluster ranks, output
    pages = rows.where(F.col("url_key").isNotNull()).groupBy("url_key").agg(F.min("row").alias("first"))
    clusters = rows.where(F.col("reason") == "").groupBy("url_key").agg(F.min("row").alias("first"))
    kept_cluster = F.when(F.col("reason") == "", F.col("cluster_id")).otherwise(F.lit(-1))
    out = (rows.join(_rank(pages, "url_key", "first", "group"), "url_key", "left")
           .join(_rank(clusters, "url_key", "first", "cluster_id"), "url_key", "left")
           .select("row", "url_key", F.coalesce("group", F.lit(-1)).alias("group"), "medoid_cos", "caption_cos",
                   "reason", kept_cluster.alias("cluster_id")))  # fmt: skip
    return out, (prepared, rows)


# ---------------------------------------------------------------- arrays in, MineResult out


def mine_spark(image: np.ndarray, text: np.ndarray, urls: Sequence[str], config: MineConfig | None = None, *,
               spark: Any = None, master: str = "local[2]", partitions: int | None = None) -> MineResult:  # fmt: skip
    """`mine` on Spark for in-memory arrays: they are written to a temporary parquet file that Spark
    reads, `mine_frame` runs, and the row table comes back to the driver (N narrow rows)."""
    config = (config or MineConfig()).check()
    image, text = check_arrays(image, text, len(urls))
    session = spark if spark is not None else spark_session(master, partitions)
    with tempfile.TemporaryDirectory(prefix="suti-mine-") as tmp:
        path = os.path.join(tmp, "pairs.parquet")
        _write_pairs(path, image, text, urls)
        frame, cached = _plan(session.read.parquet(path), config)
        try:
            out = frame.toPandas()
        finally:
            for f in cached:
                f.unpersist()
    out = out.sort_values("row").reset_index(drop=True)
    if not np.array_equal(out["row"].to_numpy(), np.arange(len(urls))):
        raise RuntimeError(f"Spark returned {len(out)} rows for {len(urls)} inputs")  # a bug, not user input
    group = out["group"].to_numpy(np.int64)
    keys = out.loc[group >= 0].drop_duplicates("group").sort_values("group")["url_key"].tolist()
    med = out["medoid_cos"].to_numpy(np.float32, na_value=np.nan)
    result = assemble(keys, group, med, out["caption_cos"].to_numpy(np.float32),
                      out["reason"].to_numpy(object), config)  # fmt: skip
    # cluster ids are recomputed by `assemble` from the kept rows; Spark's own must agree
    if not np.array_equal(result.table["cluster_id"].to_numpy(), out["cluster_id"].to_numpy(np.int64)):
        raise RuntimeError("Spark's cluster ids disagree with the kept rows")  # a bug, not user input
    return result


def _write_pairs(path: str, image: np.ndarray, text: np.ndarray, urls: Sequence[str]) -> None:
    """(row, url, image, text) as parquet with list<float> columns, one row group per chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, dim = image.shape

    def vectors(x: np.ndarray):
        flat = pa.array(np.ascontiguousarray(x).reshape(-1), pa.float32())
        return pa.ListArray.from_arrays(pa.array(np.arange(0, (len(x) + 1) * dim, dim, dtype=np.int32)), flat)

    schema = pa.schema([("row", pa.int64()), ("url", pa.string()), ("image", pa.list_(pa.float32())),
                        ("text", pa.list_(pa.float32()))])  # fmt: skip
    with pq.ParquetWriter(path, schema) as writer:
        for a in range(0, n, WRITE_CHUNK):
            b = min(n, a + WRITE_CHUNK)
            writer.write_table(pa.table({
                "row": pa.array(np.arange(a, b, dtype=np.int64)),
                "url": pa.array([u if isinstance(u, str) else None for u in urls[a:b]], pa.string()),
                "image": vectors(image[a:b]),
                "text": vectors(text[a:b]),
            }, schema=schema))  # fmt: skip
