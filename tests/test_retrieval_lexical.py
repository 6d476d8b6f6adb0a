"""retrieval.lexical: caption coverage and BM25 over clusters, and NeighborRetriever choosing the cluster by captions."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from retrieval import NeighborRetriever, build_index
from retrieval.lexical import ClusterCaptions, tokenize
from suti.errors import InputError

faiss = pytest.importorskip("faiss")

CAPTIONS = ["A red star on the beach", "a red star in the snow", "red star, jungle",  # cluster 10
            "a blue cup on the beach", "a blue cup in a jungle",  # cluster 20
            "a green dog in the jungle", "a green dog at the beach, watercolor", "green dog on the beach",  # cluster 30
            "an unsorted photo of a red cup"]  # no cluster (-1)
LABELS = np.array([10, 10, 10, 20, 20, 30, 30, 30, -1])


def _textbook_bm25(query: str, k1: float = 1.2, b: float = 0.75) -> dict[int, float]:
    """Okapi BM25 written out term by term, one document per cluster (the reference for scoring="bm25")."""
    docs = {c: [w for cap, lab in zip(CAPTIONS, LABELS) if lab == c for w in tokenize(cap)]
            for c in sorted(set(LABELS.tolist()) - {-1})}  # fmt: skip
    avg = sum(len(d) for d in docs.values()) / len(docs)
    out = {}
    for c, doc in docs.items():
        tf, score = Counter(doc), 0.0
        for w in set(tokenize(query)):
            df = sum(w in d for d in docs.values())
            if tf[w]:
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                score += idf * tf[w] * (k1 + 1) / (tf[w] + k1 * (1 - b + b * len(doc) / avg))
        out[c] = score
    return out


def _by_hand_coverage(query: str, omit_weight: float) -> dict[int, float]:
    """sum of idf(t) x share(t) over the query's words, minus omit_weight x sum of idf(u) x share(u)^2 over
    the cluster's other words, share = (members whose caption has the word) / members, written out (the
    reference for "coverage"); only clusters sharing a word with the query."""
    members = {c: [set(tokenize(cap)) for cap, lab in zip(CAPTIONS, LABELS) if lab == c]
               for c in sorted(set(LABELS.tolist()) - {-1})}  # fmt: skip
    query_words = set(tokenize(query))
    out = {}
    for c, caps in members.items():
        said, unsaid = 0.0, 0.0
        for w in set().union(*caps) | query_words:
            df = sum(any(w in m for m in ms) for ms in members.values())
            if not df:
                continue
            idf, share = math.log(1 + (len(members) - df + 0.5) / (df + 0.5)), sum(w in m for m in caps) / len(caps)
            if w in query_words:
                said += idf * share
            else:
                unsaid += idf * share**2
        if said > 0:
            out[c] = said - omit_weight * unsaid
    return out


@pytest.mark.parametrize("scoring, omit_weight", [("coverage", 0.25), ("coverage", 0.0), ("coverage", 2.0), ("bm25", 0.25)])
@pytest.mark.parametrize("query", ["a red star in the desert", "green dog", "Blue CUP!", "the beach"])
def test_scores_equal_the_textbook_formula(query, scoring, omit_weight):
    clusters, scores = ClusterCaptions(CAPTIONS, LABELS, scoring=scoring, omit_weight=omit_weight).scores(query)
    if scoring == "bm25":  # BM25 has no omission term
        want = {c: s for c, s in _textbook_bm25(query).items() if s > 0}
    else:
        want = _by_hand_coverage(query, omit_weight)
    assert sorted(clusters.tolist()) == sorted(want)
    assert all(a >= b for a, b in zip(scores, scores[1:]))  # best first
    for c, s in zip(clusters.tolist(), scores.tolist()):
        assert s == pytest.approx(want[c], rel=1e-12)


@pytest.mark.parametrize("scoring", ["coverage", "bm25"])
def test_subject_words_beat_a_shared_context_word(scoring):
    index = ClusterCaptions(CAPTIONS, LABELS, scoring=scoring)
    assert index.best(["a red star in a jungle", "a green dog on the beach", "a blue cup in the snow"]) == [10, 30, 20]
    assert index.best(["purple hat"]) == [None]  # no shared word: no cluster
    assert len(index) == 3  # the unlabelled row is in no cluster


def test_coverage_is_not_pulled_by_a_word_one_member_of_another_cluster_says():
    """The green ball's 4 captions all say green; one purple ball is 'painted green', another is in the
    jungle. BM25 (one document per cluster, saturating tf) lets those two chance mentions win."""
    caps = ["a green dot ball on the grass", "a green dot ball in the snow", "a green dot ball at night",
            "a green dot ball on a table", "a purple dot ball on the grass", "a purple dot ball in the snow",
            "a purple dot ball on a table painted green", "a purple dot ball in the jungle",
            "a red cup", "a red cup in the jungle", "a red cup at the beach"]  # fmt: skip
    labels = np.array([1] * 4 + [2] * 4 + [3] * 3)
    query = "a green dot ball in the jungle"
    assert ClusterCaptions(caps, labels).best([query]) == [1]
    assert ClusterCaptions(caps, labels, scoring="bm25").best([query]) == [2]


def test_omission_prefers_the_cluster_that_adds_nothing_to_the_prompt():
    """Both hearts are green hearts; only one is dotted in every photo. A prompt naming no pattern is about
    the plain one; a prompt naming the dots still finds the dotted one."""
    caps = ["a green heart on the grass", "a green heart in the snow", "a green heart on a table",
            "a green dot heart on the grass", "a green dot heart at night", "a green dot heart in the snow",
            "a red cup", "a red cup at night"]  # fmt: skip
    labels = np.array([1] * 3 + [2] * 3 + [3] * 2)
    assert ClusterCaptions(caps, labels).best(["green heart", "green dot heart"]) == [1, 2]
    without = ClusterCaptions(caps, labels, omit_weight=0.0).scores("green heart")[1]
    assert without[0] == without[1]  # coverage alone cannot tell them apart


def test_bad_arguments_are_named():
    with pytest.raises(InputError, match="2 captions but 3"):
        ClusterCaptions(["a", "b"], np.array([0, 1, 2]))
    with pytest.raises(InputError, match="k1"):
        ClusterCaptions(["a"], np.array([0]), scoring="bm25", k1=-1)
    with pytest.raises(InputError, match="scoring must be one of"):
        ClusterCaptions(["a"], np.array([0]), scoring="tfidf")
    with pytest.raises(InputError, match="omit_weight"):
        ClusterCaptions(["a"], np.array([0]), omit_weight=float("nan"))


class _ContextEmbedder:
    """A text tower that only hears the scene: every query lands on the cluster whose vector is its scene."""

    dim = 4
    scenes = {"beach": 0, "snow": 1, "jungle": 2}

    def embed_texts(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            out[i, next((v for s, v in self.scenes.items() if s in t), 3)] = 1.0
        return out

    def embed_images(self, images):
        return np.tile(np.eye(self.dim, dtype=np.float32)[:1], (len(images), 1))


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    """Rows' vectors = their caption's scene (what a weak CLIP sees); their captions name the subject."""
    emb = _ContextEmbedder()
    x = emb.embed_texts(CAPTIONS)
    meta = pd.DataFrame({"id": [f"r{i}" for i in range(len(CAPTIONS))], "caption": CAPTIONS, "cluster": LABELS})
    out = tmp_path_factory.mktemp("lexical") / "index"
    build_index(x, out, metadata=meta)
    return out


def test_retriever_chooses_the_cluster_by_captions_for_text(index_dir):
    r = NeighborRetriever(index_dir, embedder=_ContextEmbedder())
    hits = r.search("a red star on the beach", k=2)
    assert (hits.cluster, hits.chosen_by) == (10, "captions") and set(hits.clusters) == {10}
    assert hits.ids[0] == "r0"  # members ranked by the dense score: the beach row first
    dense = r.search("a red star on the beach", k=2, choose_cluster="vectors")
    assert (dense.cluster, dense.chosen_by) == (30, "vectors")  # the scene wins without captions: 2 beach rows
    batch = r.search(["a red star on the beach", "a green dog in the snow"], k=2)
    assert [h.cluster for h in batch] == [10, 30]
    assert [h.ids for h in batch] == [r.search(q, k=2).ids for q in ("a red star on the beach",
                                                                     "a green dog in the snow")]  # fmt: skip


def test_caption_choice_falls_back_and_refuses_what_it_cannot_do(index_dir):
    r = NeighborRetriever(index_dir, embedder=_ContextEmbedder())
    assert r.search("purple hat", k=2).chosen_by == "vectors"  # no caption word in common
    assert r.search(np.eye(4, dtype=np.float32)[0], k=2).chosen_by == "vectors"  # an embedding query
    with pytest.raises(InputError, match="needs text queries"):
        r.search(np.eye(4, dtype=np.float32)[0], k=2, choose_cluster="captions")
    with pytest.raises(InputError, match="choose_cluster must be one of"):
        r.search("a red star", k=2, choose_cluster="bm25")
    with pytest.raises(InputError, match="choose_cluster must be one of"):
        NeighborRetriever(index_dir, choose_cluster="words")
    with pytest.raises(InputError, match="caption_scoring must be one of"):
        NeighborRetriever(index_dir, caption_scoring="words")
    bm25 = NeighborRetriever(index_dir, embedder=_ContextEmbedder(), caption_scoring="bm25")
    assert bm25.search("a red star on the beach", k=2).cluster == 10
    plain = r.search("a red star on the beach", k=3, same_cluster=False)
    assert plain.chosen_by is None and plain.cluster is None


def test_caption_choice_without_stored_vectors_fills_from_the_cluster(index_dir, monkeypatch):
    r = NeighborRetriever(index_dir, embedder=_ContextEmbedder(), min_fetch=1, fetch_factor=1)
    monkeypatch.setattr(r.index, "reconstruct", lambda rows: None)  # e.g. IVF-PQ without refinement
    hits = r.search("a green dog in the snow", k=3)  # a 3-row shortlist led by the snow row of cluster 10
    assert hits.cluster == 30 and set(hits.clusters) == {30} and len(hits) == 3
