"""Cluster pages: one subject per page, URLs that normalise per page, and labelled noise rows."""

from collections import Counter
from urllib.parse import urlsplit

import numpy as np
import pytest

from suti.errors import InputError
from suti.world import NOISE_KINDS, canonical_url, coarse_traits, parse_caption, plan_cluster, plan_world, render_row


def _expected(subject_id, context, seed):
    shape, color, pattern = coarse_traits(subject_id, seed)
    d = {**context.to_dict(), "shape": shape, "color": color, "pattern": pattern}
    del d["variant"]
    return d


def test_clean_page_shows_one_subject_in_varied_contexts():
    rows = plan_cluster(7, per_cluster=10, seed=2, noise=0.0)
    assert len(rows) == 10
    assert all(r.subject_id == 7 and r.cluster == 7 and not r.is_noise and r.noise_kind == "" for r in rows)
    assert len({r.context for r in rows}) >= 8
    for r in rows:
        assert parse_caption(r.caption) == _expected(7, r.context, 2)


def test_noise_rows_are_labelled_and_are_what_their_label_says():
    rows = [r for c in range(30) for r in plan_cluster(c, per_cluster=6, seed=1, noise=1.0)]
    kinds = Counter(r.noise_kind for r in rows)
    assert kinds[""] == 30 * 6 and set(kinds) == {"", *NOISE_KINDS}
    clean = {(r.cluster, r.context) for r in rows if not r.is_noise}
    for r in rows:
        assert r.is_noise == (r.noise_kind != "")
        said = parse_caption(r.caption)
        if r.noise_kind == "unrelated":
            assert r.subject_id != r.cluster and said == _expected(r.subject_id, r.context, 1)
        elif r.noise_kind == "near_duplicate":
            assert r.subject_id == r.cluster and r.jitter > 0 and (r.cluster, r.context) in clean
            assert said == _expected(r.cluster, r.context, 1)
        elif r.noise_kind == "off_topic_caption":
            assert r.subject_id == r.cluster and r.caption_subject_id != r.cluster
            assert said == _expected(r.caption_subject_id, r.caption_context, 1)
            assert said != _expected(r.cluster, r.context, 1)


def test_noise_rate_zero_and_one():
    assert not any(r.is_noise for r in plan_world(20, 5, seed=0, noise=0.0))
    rows = list(plan_world(20, 5, seed=0, noise=1.0))
    assert len(rows) == 200 and sum(r.is_noise for r in rows) == 100


def test_urls_normalise_to_one_page_per_cluster():
    rows = list(plan_world(60, 8, seed=4, noise=0.3))
    pages: dict = {}
    for r in rows:
        pages.setdefault(r.cluster, set()).add(canonical_url(r.url))
        parts = urlsplit(r.url)
        assert parts.scheme in ("http", "https") and parts.netloc.lower().rstrip("/").endswith(".example")
    assert all(len(urls) == 1 for urls in pages.values())
    assert len({next(iter(u)) for u in pages.values()}) == 60  # different pages, different URLs
    raw = [r.url for r in rows]
    assert sum(u != canonical_url(u) for u in raw) > 0.3 * len(raw)  # normalisation has work to do
    assert any("?" in u for u in raw) and any(u.endswith("/") for u in raw) and any(u.startswith("http:") for u in raw)
    assert any(urlsplit(u).netloc != urlsplit(u).netloc.lower() for u in raw)


def test_canonical_url_rules():
    assert canonical_url("http://WWW.Pics.example/ann/x-1/?ref=home#c") == "https://pics.example/ann/x-1"
    with pytest.raises(InputError, match="URL"):
        canonical_url("pics.example/ann")


def test_near_duplicate_images_are_close_but_not_identical():
    rows = [r for c in range(40) for r in plan_cluster(c, per_cluster=4, seed=0, noise=1.0)]
    dup = next(r for r in rows if r.noise_kind == "near_duplicate")
    original = next(r for r in rows if not r.is_noise and r.cluster == dup.cluster and r.context == dup.context)
    other = next(r for r in rows if not r.is_noise and r.cluster == dup.cluster and r.context != dup.context)
    a, b, c = (np.asarray(render_row(r, 64), dtype=np.float32) for r in (original, dup, other))
    near, far = np.abs(a - b).mean(), np.abs(a - c).mean()
    assert 0 < near < 0.5 * far


def test_pages_are_deterministic_and_seed_dependent():
    assert plan_cluster(3, 6, seed=5, noise=0.5) == plan_cluster(3, 6, seed=5, noise=0.5)
    assert plan_cluster(3, 6, seed=5, noise=0.5) != plan_cluster(3, 6, seed=6, noise=0.5)


@pytest.mark.parametrize(
    "args, word",
    [((-1, 4), "clusters"), ((0, 4), "at least 1"), ((5, -2), "per-cluster"), ((5, 65), "at most 64")],
)
def test_plan_rejects_bad_counts(args, word):
    with pytest.raises(InputError, match=word):
        list(plan_world(*args))


def test_plan_rejects_bad_noise():
    with pytest.raises(InputError, match="noise"):
        list(plan_world(3, 3, noise=1.5))
