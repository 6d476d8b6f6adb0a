"""retrieval.mine: URL normalisation, each stage, and noise removal on planted noise."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from retrieval import MineConfig, mine, noise_removal_metrics, normalize_url
from retrieval.mine import group_by_url, medoid_scores, near_duplicates, size_limits
from suti.errors import InputError

# ------------------------------------------------------------------ URL normalisation


@pytest.mark.parametrize(
    "url, key",
    [
        ("https://example.com/a/b", "https://example.com/a/b"),
        ("HTTP://WWW.Example.COM/a/b/", "https://example.com/a/b"),  # scheme/host case, www, http, slash
        ("https://example.com/a/b?utm_source=feed&x=1", "https://example.com/a/b"),  # query
        ("https://example.com/a/b#photo-3", "https://example.com/a/b"),  # fragment
        ("https://example.com:443/a/b", "https://example.com/a/b"),  # default https port
        ("http://example.com:80/a/b", "https://example.com/a/b"),  # default http port
        ("https://example.com:8080/a/b", "https://example.com:8080/a/b"),  # other ports are kept
        ("https://user:pw@www.example.com/a", "https://example.com/a"),  # user info
        ("https://example.com.", "https://example.com/"),  # trailing dot, empty path
        ("https://example.com///", "https://example.com/"),
        ("  https://example.com/Path/Case.HTML  ", "https://example.com/Path/Case.HTML"),  # path keeps case
        ("//cdn.example.com/x", "https://cdn.example.com/x"),  # protocol-relative
        ("https://wwwx.example.com/a", "https://wwwx.example.com/a"),  # only a "www." label is dropped
        ("http://[::1]:8080/a", "https://[::1]:8080/a"),
    ],
)
def test_normalize_url(url, key):
    assert normalize_url(url) == key


@pytest.mark.parametrize("bad", ["example.com/a", "ftp://example.com/a", "https:///a", "", "https://x.com:99999/"])
def test_normalize_url_rejects_non_http_urls(bad):
    with pytest.raises(InputError):
        normalize_url(bad)


def test_world_url_variants_group_into_their_pages():
    pages = pytest.importorskip("suti.world.pages")
    rows = list(pages.plan_world(clusters=25, per_cluster=6, seed=3, noise=0.3))
    group, keys = group_by_url([r.url for r in rows])
    clusters = np.array([r.cluster for r in rows])
    assert len(keys) == 25  # one key per page, however the row URLs are spelled
    for g in range(len(keys)):
        assert len(set(clusters[group == g])) == 1
    assert all(normalize_url(r.url) == pages.canonical_url(r.url) for r in rows)


# ------------------------------------------------------------------ planted-noise data

DIM = 128


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def planted(pages: int = 40, per_page: int = 8, seed: int = 0, rate: float = 0.3) -> pd.DataFrame:
    """Clustered image vectors per page URL + planted noise, with ground truth.

    Measured on this data (seed 0, mean +- std [min, max]):
    - cosine to the page medoid: clean 0.78 +- 0.08 [0.66, 1], unrelated images 0.01 +- 0.09 [-0.17, 0.25];
    - image-caption cosine: clean 0.57 +- 0.04 [0.44, 0.67], off-topic captions 0.0 +- 0.07 [-0.16, 0.24];
    - near-duplicates have cosine >= 0.99 to their original; distinct clean pairs <= 0.83.
    Thresholds 0.5 (medoid), 0.25 (caption), 0.94 (duplicate) sit between the classes with >= 3.5
    standard deviations to spare, so removal should be near perfect; the asserts leave a margin
    (>= 0.97 overall, >= 0.95 per kind) because the noise draws are random.
    """
    rng = np.random.default_rng(seed)
    centres = _unit(np.pad(rng.standard_normal((pages + 200, DIM - 1)), ((0, 0), (0, 1))))
    gap = np.eye(DIM, dtype=np.float32)[-1]  # the modality offset, orthogonal to every centre

    def image(c):
        return _unit(centres[c] + 0.6 * rng.standard_normal(DIM) / np.sqrt(DIM))

    def text(c):
        return _unit(centres[c] + 0.5 * rng.standard_normal(DIM) / np.sqrt(DIM) + gap)

    spellings = ["https://{h}/{p}", "http://www.{h}/{p}/", "HTTPS://{H}/{p}?utm_source=feed", "https://{h}:443/{p}#x"]
    rows = []
    for page in range(pages):
        host, path = f"site{page % 7}.example", f"user{page}/gallery-{page}"

        def add(img, txt, kind=""):
            url = spellings[len(rows) % len(spellings)].format(h=host, H=host.upper(), p=path)
            rows.append(dict(id=f"r{len(rows)}", url=url, cluster=page, img=img, txt=txt, is_noise=bool(kind),
                             noise_kind=kind))  # fmt: skip

        for _ in range(per_page):
            add(image(page), text(page))
            clean = rows[-1]["img"]
            if rng.random() < rate:  # an unrelated image, with a caption about itself
                other = pages + int(rng.integers(200))
                add(image(other), text(other), "unrelated")
            if rng.random() < rate:
                add(_unit(clean + 0.1 * rng.standard_normal(DIM) / np.sqrt(DIM)), text(page), "near_duplicate")
            if rng.random() < rate:
                add(image(page), text(pages + int(rng.integers(200))), "off_topic_caption")
    return pd.DataFrame(rows)


CONFIG = MineConfig(min_medoid_cos=0.5, min_caption_cos=0.25, dedup_cos=0.94, min_cluster_size=3, max_cluster_size=64)


@pytest.fixture(scope="module")
def world():
    frame = planted()
    img, txt = np.stack(frame["img"]), np.stack(frame["txt"])
    return frame.drop(columns=["img", "txt"]), img, txt


def test_noise_removal_precision_and_recall(world):
    meta, img, txt = world
    result = mine(img, txt, meta["url"].tolist(), CONFIG)
    m = noise_removal_metrics(result.flagged_noise, meta["is_noise"], meta["noise_kind"])
    assert meta["is_noise"].sum() > 60  # enough planted noise for the rates to mean something
    assert m["precision"] >= 0.97, m
    assert m["recall"] >= 0.97, m
    for kind in ("unrelated", "near_duplicate", "off_topic_caption"):
        assert m["per_kind"][kind]["recall"] >= 0.95, (kind, m)
    # each reason catches its own kind of noise
    table = result.table.assign(kind=meta["noise_kind"])
    assert set(table.loc[table.reason == "off_medoid", "kind"]) <= {"unrelated"}
    assert set(table.loc[table.reason == "caption_mismatch", "kind"]) <= {"off_topic_caption"}
    assert set(table.loc[table.reason == "near_duplicate", "kind"]) <= {"near_duplicate"}


def test_clusters_follow_pages_and_metadata_stays_aligned(world):
    meta, img, txt = world
    result = mine(img, txt, meta["url"].tolist(), CONFIG)
    assert result.stats["groups"] == 40 and result.stats["clusters"] == 40
    assert result.stats["kept"] + sum(result.stats["dropped"].values()) == len(meta)
    json.dumps(result.stats)  # the stats are JSON-able
    kept = result.kept_rows(meta)
    # ids round-trip: the kept table is the input rows at the kept positions, in order
    assert kept["id"].tolist() == meta.loc[result.kept, "id"].tolist()
    # one mined cluster = one page (ground-truth cluster)
    assert kept.groupby("cluster_id")["cluster"].nunique().max() == 1
    clusters = result.clusters(meta)
    assert len(clusters) == 40 and clusters["size"].sum() == len(kept)
    row = clusters.iloc[0]
    assert [meta["id"][r] for r in row["rows"]] == row["ids"]
    ds = result.to_dataset(meta, level="clusters")
    assert ds.num_rows == 40 and "captions" not in ds.column_names  # (this metadata has no caption column)


def test_save_writes_rows_and_stats(tmp_path, world):
    meta, img, txt = world
    result = mine(img, txt, meta["url"].tolist(), CONFIG)
    result.save(tmp_path / "mined")
    assert json.loads((tmp_path / "mined" / "mine_stats.json").read_text()) == result.stats
    back = pd.read_parquet(tmp_path / "mined" / "mine_rows.parquet")
    assert back["reason"].tolist() == result.table["reason"].tolist()


# ------------------------------------------------------------------ stages


def test_near_duplicates_keep_the_first_in_row_order():
    a = _unit(np.array([[1.0, 0, 0], [0.999, 0.04, 0], [0, 1.0, 0], [0.998, 0, 0.06]]))
    dup = near_duplicates(a, np.zeros(4, np.int64), np.ones(4, bool), 0.94)
    assert dup.tolist() == [False, True, False, True]
    # only candidates count: if row 0 was already dropped, row 1 is the first and is kept
    dup = near_duplicates(a, np.zeros(4, np.int64), np.array([False, True, True, True]), 0.94)
    assert dup.tolist() == [False, False, False, True]


def test_size_limits_drop_small_groups_and_cap_large_ones_by_score():
    group = np.array([0, 0, 1, 1, 1, 1, 1, 2, 2, 2])
    score = np.array([0.9, 0.9, 0.5, 0.9, 0.7, 0.9, 0.8, 0.9, 0.9, 0.9], np.float32)
    small, capped = size_limits(group, np.ones(10, bool), score, min_size=3, max_size=3)
    assert small.tolist() == [True, True] + [False] * 8
    # group 1 keeps its 3 best: rows 3, 5 (0.9, ties by row order) and 6 (0.8)
    assert np.flatnonzero(capped).tolist() == [2, 4]


def test_medoid_is_a_robust_centre():
    x = _unit(np.array([[1.0, 0.1, 0], [1.0, -0.1, 0], [1.0, 0, 0.1], [0, 0, 1.0]]))
    s = medoid_scores(x, np.array([0, 0, 0, 0]))
    assert s[3] < 0.2 < 0.9 < s[:3].min()
    assert np.isnan(medoid_scores(x, np.array([-1, 0, 0, 0]))[0])


def test_bad_urls_are_dropped_not_fatal():
    img = _unit(np.ones((4, 8)))
    result = mine(img, img, ["not a url", "https://a.example/p", "https://a.example/p/", "http://a.example/p"],
                  MineConfig(min_cluster_size=1))  # fmt: skip
    assert result.table["reason"].tolist() == ["bad_url", "", "near_duplicate", "near_duplicate"]


def test_mine_rejects_bad_inputs():
    x = _unit(np.ones((3, 8)))
    with pytest.raises(InputError, match="URLs"):
        mine(x, x, ["https://a.example/"])
    with pytest.raises(InputError, match=r"\(N, D\)"):
        mine(x, x[:, :4], ["https://a.example/"] * 3)
    with pytest.raises(InputError, match="min_cluster_size"):
        mine(x, x, ["https://a.example/"] * 3, MineConfig(min_cluster_size=5, max_cluster_size=2))
    with pytest.raises(InputError, match="cosine"):
        MineConfig(dedup_cos=2.0).check()


def test_noise_removal_metrics_definitions():
    m = noise_removal_metrics(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool), ["a", "", "b", ""])
    assert (m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5)
    assert m["per_kind"] == {"a": {"n": 1, "removed": 1, "recall": 1.0}, "b": {"n": 1, "removed": 0, "recall": 0.0}}
    none = noise_removal_metrics(np.zeros(3, bool), np.zeros(3, bool))
    assert (none["precision"], none["recall"]) == (1.0, 1.0)
    with pytest.raises(InputError):
        noise_removal_metrics(np.zeros(3, bool), np.zeros(4, bool))


def test_duplicate_order_policy_and_pair_aware_metrics():
    # row 0 is a slightly-off copy that comes before its original (row 1), as in the world's pages
    x = _unit(np.array([[1.0, 0.02, 0.3], [1.0, 0.0, 0.32], [0.9, 0.3, 0.3], [1.0, -0.3, 0.3]]))
    urls = ["https://a.example/p"] * 4
    first = mine(x, x, urls, MineConfig(min_cluster_size=1, dedup_cos=0.99))
    assert first.table["reason"].tolist() == ["", "near_duplicate", "", ""]
    truth, dup_of = np.array([True, False, False, False]), np.array([1, -1, -1, -1])
    plain = noise_removal_metrics(first.flagged_noise, truth)
    assert (plain["precision"], plain["recall"]) == (0.0, 0.0)
    paired = noise_removal_metrics(first.flagged_noise, truth, duplicate_of=dup_of)
    assert (paired["precision"], paired["recall"]) == (1.0, 1.0)
    best = mine(x, x, urls, MineConfig(min_cluster_size=1, dedup_cos=0.99, dedup_keep="best"))
    kept_of_pair = [i for i in (0, 1) if best.table["reason"][i] == ""]
    assert len(kept_of_pair) == 1
    med = best.table["medoid_cos"]
    assert med[kept_of_pair[0]] >= med[1 - kept_of_pair[0]]


# ------------------------------------------------------------------ the group cap (bounded work per page)


def test_group_overflow_keeps_a_pseudo_random_sample_of_each_big_group():
    from retrieval.mine import group_overflow, row_priority

    rows = np.arange(1000)
    prio = row_priority(rows)
    assert prio.dtype == np.int64 and (prio >= 0).all() and len(set(prio.tolist())) == 1000
    assert np.array_equal(prio, row_priority(rows))  # deterministic
    group = np.where(rows < 900, 0, 1)  # one page of 900 rows, one of 100
    over = group_overflow(group, prio, 300)
    assert over[:900].sum() == 600 and not over[900:].any()
    kept = np.flatnonzero(~over[:900])
    assert set(kept) == set(np.argsort(prio[:900])[:300])  # the lowest priorities survive
    assert kept.min() < 100 and kept.max() > 800  # spread over the page, not its first rows


def test_mine_caps_huge_pages_before_the_filters():
    rng = np.random.default_rng(3)
    centre = _unit(rng.standard_normal(16))
    x = _unit(centre + 0.3 * rng.standard_normal((500, 16)) / 4)
    urls = ["https://big.example/all"] * 500
    result = mine(x, x, urls, MineConfig(min_medoid_cos=0.0, min_caption_cos=0.0, dedup_cos=0.999,
                                         max_cluster_size=20, max_group_rows=50))  # fmt: skip
    dropped = result.stats["dropped"]
    assert dropped["group_overflow"] == 450 and dropped["cluster_cap"] == 30 and result.stats["kept"] == 20
    over = (result.table["reason"] == "group_overflow").to_numpy()
    assert np.isnan(result.table["medoid_cos"][over]).all()  # never scored: bounded work
    assert not result.flagged_noise[over].any()  # the cap is not a claim that a row is noise
    with pytest.raises(InputError, match="max_group_rows 10 is below max_cluster_size 20"):
        MineConfig(max_cluster_size=20, max_group_rows=10).check()


def test_engine_choice_errors_are_typed():
    x = _unit(np.ones((3, 8)))
    with pytest.raises(InputError, match="engine must be one of"):
        mine(x, x, ["https://a.example/"] * 3, engine="dask")
    with pytest.raises(InputError, match="no options"):
        mine(x, x, ["https://a.example/"] * 3, master="local[2]")
