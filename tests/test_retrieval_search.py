"""retrieval.search: NeighborRetriever over an index directory; same-cluster mode; end-to-end alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from retrieval import IndexMismatchError, MineConfig, NeighborRetriever, build_index, mine
from suti.errors import InputError

faiss = pytest.importorskip("faiss")
DIM, CLUSTERS, PER = 16, 12, 6


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def catalog():
    rng = np.random.default_rng(0)
    centres = _unit(rng.standard_normal((CLUSTERS, DIM)))
    cluster = np.repeat(np.arange(CLUSTERS), PER)
    x = _unit(centres[cluster] + 0.3 * rng.standard_normal((len(cluster), DIM)) / np.sqrt(DIM))
    meta = pd.DataFrame({"id": [f"img{i}" for i in range(len(x))], "caption": [f"subject {c} photo" for c in cluster],
                         "url": [f"https://s.example/{c}" for c in cluster], "cluster": cluster,
                         "source_row": np.arange(len(x))})  # fmt: skip
    return x, meta, centres


class FakeEmbedder:
    """Maps 'subject N ...' to the centre of cluster N and an image to its mean colour's cluster."""

    def __init__(self, centres):
        self.centres, self.dim = centres, centres.shape[1]

    def embed_texts(self, texts):
        return np.stack([self.centres[int(t.split()[1])] for t in texts])

    def embed_images(self, images):
        return np.stack([self.centres[int(np.asarray(im)[0, 0, 0]) % CLUSTERS] for im in images])


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, catalog):
    x, meta, _ = catalog
    out = tmp_path_factory.mktemp("index")
    build_index(x, out, metadata=meta)
    return out


def test_embedding_query_returns_top_k_of_one_cluster(index_dir, catalog):
    x, meta, centres = catalog
    r = NeighborRetriever(index_dir)
    hits = r.search(centres[5], k=4)
    assert len(hits) == 4 and hits.cluster == 5 and set(hits.clusters) == {5}
    # exactly the 4 best members of cluster 5, best first
    members = np.flatnonzero(meta["cluster"] == 5)
    best = members[np.argsort(-(x[members] @ centres[5]))[:4]]
    assert hits.rows.tolist() == best.tolist()
    np.testing.assert_allclose(hits.scores, x[best] @ centres[5], rtol=1e-5)
    assert hits.ids == [f"img{i}" for i in best] and hits.captions == ["subject 5 photo"] * 4
    # k larger than the cluster: only its members, never another cluster's
    assert set(r.search(centres[5], k=50).rows) == set(members)


def test_plain_search_matches_faiss_and_drops_missing_results(index_dir, catalog):
    x, _, centres = catalog
    r = NeighborRetriever(index_dir)
    hits = r.search(centres[2], k=10, same_cluster=False)
    exact = faiss.knn(centres[2][None], x, 10, metric=faiss.METRIC_INNER_PRODUCT)[1][0]
    np.testing.assert_array_equal(hits.rows, exact)
    everything = r.search(centres[2], k=1000, same_cluster=False)  # FAISS pads with -1: dropped
    assert len(everything) == len(x) and (everything.rows >= 0).all()


def test_batch_queries_equal_single_queries(index_dir, catalog):
    _, _, centres = catalog
    r = NeighborRetriever(index_dir)
    batch = r.search(centres[[1, 7, 3]], k=3)
    assert isinstance(batch, list) and len(batch) == 3
    for hits, c in zip(batch, (1, 7, 3)):
        single = r.search(centres[c], k=3)
        assert hits.rows.tolist() == single.rows.tolist() and hits.cluster == c


def test_text_and_image_queries_need_an_embedder(index_dir, catalog, tmp_path):
    _, _, centres = catalog
    with pytest.raises(InputError, match="need an embedder"):
        NeighborRetriever(index_dir).search("subject 3 photo", k=2)
    r = NeighborRetriever(index_dir, embedder=FakeEmbedder(centres))
    assert r.search("subject 3 photo", k=2).cluster == 3
    assert [h.cluster for h in r.search(["subject 4 x", "subject 9 y"], k=2)] == [4, 9]
    img = Image.new("RGB", (8, 8), (8, 0, 0))
    assert r.search(img, k=2).cluster == 8
    img.save(tmp_path / "q.png")
    assert r.search(Path(tmp_path / "q.png"), k=2).cluster == 8
    with pytest.raises(InputError, match="all strings or all images"):
        r.search(["subject 1 x", img], k=2)
    with pytest.raises(InputError, match="k must"):
        r.search("subject 1 x", k=0)
    with pytest.raises(InputError, match="dim"):
        r.search(np.ones(DIM + 1, np.float32), k=2)


def test_images_load_lazily_from_a_source_or_paths(index_dir, catalog, tmp_path):
    x, meta, centres = catalog
    source = [{"image": Image.new("RGB", (4, 4), (i % 256, 0, 0))} for i in range(len(x))]
    r = NeighborRetriever(index_dir, image_source=source)
    hits = r.search(centres[0], k=3)
    assert hits._images is None  # nothing decoded until asked
    assert [im.getpixel((0, 0))[0] for im in hits.images] == hits.rows.tolist()
    # metadata with file paths instead of a source
    paths = []
    for i in range(len(x)):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (4, 4), (0, i % 256, 0)).save(p)
        paths.append(str(p))
    r = NeighborRetriever(index_dir, metadata=meta.assign(path=paths))
    hits = r.search(centres[0], k=2)
    assert hits.paths == [paths[i] for i in hits.rows]
    assert [im.getpixel((0, 0))[1] for im in hits.images] == hits.rows.tolist()
    with pytest.raises(InputError, match="has no image"):
        NeighborRetriever(index_dir).search(centres[0], k=1).images


def test_metadata_must_match_the_index(index_dir, catalog):
    _, meta, centres = catalog
    with pytest.raises(IndexMismatchError, match="rows"):
        NeighborRetriever(index_dir, metadata=meta.iloc[:-1])
    with pytest.raises(IndexMismatchError, match="dim"):
        NeighborRetriever(index_dir, embedder=FakeEmbedder(np.ones((2, DIM + 1), np.float32)))
    r = NeighborRetriever(index_dir, metadata=meta.drop(columns=["cluster"]))
    with pytest.raises(InputError, match="same_cluster=False"):
        r.search(centres[0], k=2)


def test_ids_round_trip_through_mining_and_indexing(tmp_path):
    """rows -> mine (drops some rows) -> index of kept rows -> search by each kept vector -> same row."""
    rng = np.random.default_rng(1)
    centres = _unit(rng.standard_normal((8, DIM)))
    page = np.repeat(np.arange(8), 7)
    img = _unit(centres[page] + 0.4 * rng.standard_normal((len(page), DIM)) / np.sqrt(DIM))
    img[::9] = _unit(rng.standard_normal((len(img[::9]), DIM)))  # unrelated images, to be dropped
    meta = pd.DataFrame({"id": [f"row-{i}" for i in range(len(page))], "caption": [f"c{i}" for i in range(len(page))],
                         "url": [f"https://p.example/{p}/" for p in page]})  # fmt: skip
    result = mine(img, img, meta["url"].tolist(), MineConfig(min_medoid_cos=0.5, min_caption_cos=0.0))
    kept = result.kept_rows(meta)
    assert 0 < len(kept) < len(meta)
    build_index(img[result.kept], tmp_path, metadata=kept)
    r = NeighborRetriever(tmp_path)
    assert r.cluster_column == "cluster_id"
    for row, vec in zip(kept.itertuples(), img[result.kept]):
        hit = r.search(vec, k=1, same_cluster=False)
        assert (hit.ids[0], hit.captions[0]) == (row.id, row.caption)
        assert r.search(vec, k=3).cluster == row.cluster_id


def test_same_cluster_without_stored_vectors_uses_the_shortlist(index_dir, catalog, monkeypatch):
    _, _, centres = catalog
    r = NeighborRetriever(index_dir)
    exact = r.search(centres[6], k=3)
    monkeypatch.setattr(r.index, "reconstruct", lambda rows: None)  # e.g. IVF-PQ without refinement
    approx = r.search(centres[6], k=3)
    assert approx.cluster == 6 and approx.rows.tolist() == exact.rows.tolist()


def test_metadata_file_is_verified_and_stray_files_are_ignored(tmp_path, catalog):
    from retrieval import IndexCorruptError

    x, meta, centres = catalog
    build_index(x, tmp_path, metadata=meta)
    (tmp_path / "metadata.parquet").write_bytes(b"garbage")
    with pytest.raises(IndexCorruptError, match="sha256"):
        NeighborRetriever(tmp_path)
    build_index(x, tmp_path)  # rebuilt without metadata: the old file must not be paired with it
    r = NeighborRetriever(tmp_path)
    assert r.metadata is None and r.search(centres[1], k=2, same_cluster=False).ids[0].isdigit()


def test_l2_metric_ranks_unit_vectors_like_inner_product(tmp_path, index_dir, catalog):
    x, meta, centres = catalog
    build_index(x, tmp_path, metric="l2", metadata=meta)
    ip, l2 = NeighborRetriever(index_dir), NeighborRetriever(tmp_path)
    for c in (0, 4, 11):
        a, b = ip.search(centres[c], k=4), l2.search(centres[c], k=4)
        assert a.rows.tolist() == b.rows.tolist() and a.cluster == b.cluster == c
        np.testing.assert_allclose(b.scores, 2 - 2 * a.scores, atol=1e-5)  # squared distances, ascending
    with pytest.raises(InputError, match="cluster_column"):
        NeighborRetriever(index_dir, cluster_column="nope")


def test_central_member_order_puts_the_outlier_last(tmp_path, catalog):
    """member_order="central": the members the cluster agrees on first (brute-force mean similarity),
    an outlier (a restyled catalog photo) last, whatever the query; same for l2; bad names fail."""
    x, meta, centres = catalog
    x = x.copy()
    members = np.flatnonzero(meta["cluster"] == 3)
    x[members[0]] = _unit(centres[3] + 0.9 * centres[7])  # member 0 drifts toward cluster 7 ...
    query = x[members[0]]  # ... and a query from that side ranks it first
    for metric in ("ip", "l2"):
        out = tmp_path / metric
        build_index(x, out, metric=metric, metadata=meta)
        r = NeighborRetriever(out)
        assert r.search(query, k=3).rows[0] == members[0]  # the default order follows the query
        hits = r.search(query, k=len(members), member_order="central")
        sims = x[members] @ x[members].T  # (n, n)
        brute = (sims.sum(axis=1) - np.diag(sims)) / (len(members) - 1)
        expected = members[np.argsort(-brute, kind="stable")]
        assert hits.cluster == 3 and hits.rows.tolist() == expected.tolist() and hits.rows[-1] == members[0]
        exact = r.search(query, k=len(members))  # scores stay the query's FAISS scores
        by_row = dict(zip(exact.rows.tolist(), exact.scores.tolist()))
        np.testing.assert_allclose(hits.scores, [by_row[i] for i in hits.rows], rtol=1e-5)
    central = NeighborRetriever(tmp_path / "ip", member_order="central")
    assert central.cluster_members(3, k=2).rows.tolist() == expected[:2].tolist()  # no query needed
    assert central.cluster_members(3, k=1, member_order="query", query=query).rows[0] == members[0]
    with pytest.raises(InputError, match="not a cluster"):
        central.cluster_members(99, k=2)
    assert central.search(query, k=2).rows.tolist() == expected[:2].tolist()
    assert central.search(query, k=1, member_order="query").rows[0] == members[0]
    with pytest.raises(InputError, match="member_order"):
        NeighborRetriever(tmp_path / "ip", member_order="medoid")
    with pytest.raises(InputError, match="member_order"):
        central.search(query, k=2, member_order="random")
