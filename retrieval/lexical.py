"""Okapi BM25 over clusters: each cluster is one document, the concatenation of its members' captions.

Re-Imagen mode must pick ONE cluster (one subject) for a prompt. A prompt names the subject and a new
context; a cluster's captions name the same subject in every member and each context only once. With
the cluster as the document, the subject's words get the high term frequencies and a context word
shared by chance with one member counts once, so the subject decides. (Per-entry dense text -> image
search lets that one context match win: see docs/retrieval.md for both measured on the world.)

    bm25 = ClusterBM25(captions, labels)        # labels: (N,) int64 cluster per caption, -1 = none
    clusters, scores = bm25.scores("a red teapot in the jungle")   # best first, only clusters with a hit
    bm25.best(["...", "..."])                   # [cluster or None] per query

Arrays in, arrays out: an inverted index of (term, cluster, tf) postings sorted by term; a query
adds each of its terms' postings into one score per cluster. Standard parameters k1 = 1.2, b = 0.75.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from suti.errors import InputError

_WORD = re.compile(r"[0-9a-z]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits ("Polka-dot cup!" -> ["polka", "dot", "cup"])."""
    return _WORD.findall(text.lower())


class ClusterBM25:
    """BM25 scores of whole clusters for a text query."""

    def __init__(self, captions: Sequence[str], labels: np.ndarray, k1: float = 1.2, b: float = 0.75) -> None:
        labels = np.asarray(labels, np.int64)
        if len(captions) != len(labels):
            raise InputError(f"{len(captions)} captions but {len(labels)} cluster labels")
        if k1 < 0 or not 0 <= b <= 1:
            raise InputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b = float(k1), float(b)
        self.clusters, doc_of_row = np.unique(labels[labels >= 0], return_inverse=True)  # (C,), (N',)
        vocab: dict[str, int] = {}
        term_ids, doc_ids = [], []
        for doc, caption in zip(doc_of_row.tolist(), (c for c, lab in zip(captions, labels) if lab >= 0)):
            for word in tokenize(caption if isinstance(caption, str) else ""):
                term_ids.append(vocab.setdefault(word, len(vocab)))
                doc_ids.append(doc)
        self.vocab = vocab
        n_docs = len(self.clusters)
        term = np.asarray(term_ids, np.int64)  # (T,) one entry per token
        doc = np.asarray(doc_ids, np.int64)
        self.doc_len = np.bincount(doc, minlength=n_docs).astype(np.float64)  # (C,) tokens per cluster
        pair, tf = np.unique(term * max(n_docs, 1) + doc, return_counts=True)  # sorted by term, then doc
        self._term = pair // max(n_docs, 1)  # (P,) postings
        self._doc = pair % max(n_docs, 1)
        self._tf = tf.astype(np.float64)
        self._start = np.searchsorted(self._term, np.arange(len(vocab) + 1))  # (V+1,) postings of term t
        df = np.diff(self._start).astype(np.float64)  # (V,) clusters containing each term
        self.idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        avg_len = float(self.doc_len.mean()) if n_docs else 0.0
        self._norm = self.k1 * (1 - self.b + self.b * self.doc_len / max(avg_len, 1e-9))  # (C,) length term

    def __len__(self) -> int:
        return len(self.clusters)

    def scores(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(clusters, BM25 scores), best first, for the clusters sharing at least one word with `text`."""
        total = np.zeros(len(self.clusters))  # (C,)
        norm = self._norm
        for t in {self.vocab[w] for w in tokenize(text) if w in self.vocab}:
            lo, hi = self._start[t], self._start[t + 1]
            docs, tf = self._doc[lo:hi], self._tf[lo:hi]
            total[docs] += self.idf[t] * tf * (self.k1 + 1) / (tf + norm[docs])
        hit = np.flatnonzero(total > 0)
        order = hit[np.lexsort((self.clusters[hit], -total[hit]))]  # ties: the smaller cluster id
        return self.clusters[order], total[order]

    def best(self, texts: Sequence[str]) -> list[int | None]:
        """The best cluster per text, None when no cluster shares a word with it."""
        out = []
        for text in texts:
            clusters, _ = self.scores(text)
            out.append(int(clusters[0]) if len(clusters) else None)
        return out
