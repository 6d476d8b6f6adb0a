"""retrieval.spark: the Spark engine (local[2]) gives the local engine's row table, stats and clusters.

Marked slow: one Spark session for the module, and JVM start-up plus Python-worker start-up cost
~40 s before the first result (2-3 min in all on a busy 2-core machine). Run with
`python -m pytest -m slow tests/test_retrieval_spark.py`.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'suti-engine[spark]')")
if shutil.which("java") is None:
    pytest.skip("the Spark engine needs Java 17+ on PATH", allow_module_level=True)

from test_retrieval_mine import CONFIG, _unit, planted

from retrieval import MineConfig, mine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    from retrieval.spark import spark_session

    session = spark_session("local[2]", partitions=4)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def pairs():
    """Planted pages + bad URLs + one huge page that overflows `max_group_rows` (shuffled rows)."""
    frame = planted(pages=20, per_page=6, seed=2)
    img, txt = np.stack(frame["img"]), np.stack(frame["txt"])
    urls = frame["url"].tolist()
    rng = np.random.default_rng(5)
    centre = _unit(rng.standard_normal(img.shape[1]))
    big = _unit(centre + 0.5 * rng.standard_normal((150, img.shape[1])) / np.sqrt(img.shape[1]))
    img = np.concatenate([img, big, img[:3]])
    txt = np.concatenate([txt, big, txt[:3]])
    urls = urls + [f"https://huge.example/feed?page={i}" for i in range(150)] + ["not a url", "", "ftp://x.example/"]
    order = rng.permutation(len(urls))  # interleave the pages, so row order matters
    return img[order], txt[order], [urls[i] for i in order]


def test_spark_engine_equals_the_local_engine(spark, pairs):
    img, txt, urls = pairs
    config = MineConfig(**{**CONFIG.__dict__, "max_group_rows": 40, "max_cluster_size": 30})
    local = mine(img, txt, urls, config)
    remote = mine(img, txt, urls, config, engine="spark", spark=spark)
    reasons = local.stats["dropped"]
    # the data exercises every drop reason that matters here, including the group cap
    assert reasons["group_overflow"] == 110 and reasons["bad_url"] == 3, reasons
    assert min(reasons[r] for r in ("off_medoid", "caption_mismatch", "near_duplicate", "cluster_cap")) > 0
    assert local.stats["clusters"] == 21
    for column in ("url_key", "group", "kept", "reason", "cluster_id"):
        assert remote.table[column].tolist() == local.table[column].tolist(), column
    for column in ("medoid_cos", "caption_cos"):
        np.testing.assert_allclose(remote.table[column], local.table[column], rtol=0, atol=1e-6)
    assert remote.stats == local.stats
    meta = pd.DataFrame({"id": [f"r{i}" for i in range(len(urls))], "url": urls})
    a, b = local.clusters(meta), remote.clusters(meta)
    assert a["ids"].tolist() == b["ids"].tolist() and a["url"].tolist() == b["url"].tolist()


def test_spark_engine_through_the_cli(tmp_path, spark):
    """`suti index build --mine --engine spark` writes the same mining outcome as the local engine."""
    import datasets
    from _clip import make_tiny_clip
    from PIL import Image

    from tools.index import main

    spec = make_tiny_clip(tmp_path / "clip", "retrieval-spark-tiny-clip")
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (3, 24, 24, 3), dtype=np.uint8)
    rows = {"image": [], "caption": [], "url": []}
    for i in range(12):  # three pages of near-identical images, one bad URL
        img = np.clip(base[i % 3].astype(int) + rng.integers(-3, 4, (24, 24, 3)), 0, 255).astype(np.uint8)
        rows["image"].append(Image.fromarray(img))
        rows["caption"].append(f"page {i % 3} picture")
        rows["url"].append(f"https://site.example/page-{i % 3}?ref={i}" if i != 7 else "nowhere")
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "ds"))
    args = ["build", "--dataset", str(tmp_path / "ds"), "--no-progress", "--mine", "--min-caption-cos", "-1",
            "--min-cluster-size", "1", "--model-name", spec.model_name, "--checkpoint", spec.checkpoint,
            "--model-config", spec.config]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "spark"), "--engine", "spark", "--spark-master", "local[2]"]) == 0
    stats = [json.loads((tmp_path / d / "mine" / "mine_stats.json").read_text()) for d in ("local", "spark")]
    assert stats[0] == stats[1] and stats[0]["clusters"] == 3 and stats[0]["dropped"]["bad_url"] == 1
    tables = [pd.read_parquet(tmp_path / d / "mine" / "mine_rows.parquet") for d in ("local", "spark")]
    assert tables[0][["reason", "cluster_id"]].equals(tables[1][["reason", "cluster_id"]])
