"""Lexical cluster choice: rank whole clusters (all their captions together) for a text query.

Re-Imagen mode must pick ONE cluster (one subject) for a prompt. A prompt names the subject and a new
context; a cluster's captions name the same subject in every member and each context only once or twice.
Two scorings over the same inverted index (docs/retrieval.md has both measured on the world):

    coverage (default)  score(c) = sum over query terms t of  idf(t) * share_c(t)
                                   - omit_weight * sum over c's terms u NOT in the query of idf(u) * share_c(u)^2
                        share_c(t) = members of c whose caption has t / members of c
    bm25                Okapi BM25 with the cluster's concatenated captions as ONE document
                        (k1 = 1.2, b = 0.75 by default)

Coverage asks "is this word said of (nearly) every member?": the subject's words are, a context word
shared by chance with one member of another cluster counts 1/8 there. BM25's saturating term frequency
(tf / (tf + k1·…)) gives that one chance mention about half the weight of a word every member repeats,
so the new context in the prompt pulls towards clusters that happen to show it.
The omission term (coverage only, `omit_weight`, default 0.25) charges a cluster for what every member
says and the prompt does not ("polka dot" for the prompt "a green heart"): of two clusters that cover
the prompt equally, the one that adds least wins. Squaring the share keeps a context said by one
member in eight nearly free (1/64 of a word).
Both use idf(t) = ln(1 + (C − df + 0.5) / (df + 0.5)) over the C clusters.

    index = ClusterCaptions(captions, labels)          # labels: (N,) int64 cluster per caption, -1 = none
    clusters, scores = index.scores("a red teapot in the jungle")   # best first, only clusters with a hit
    index.best(["...", "..."])                        # [cluster or None] per query

Arrays in, arrays out: postings of (term, cluster, token count, member count) sorted by term; a query
adds each of its terms' postings into one score per cluster.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from suti.errors import InputError

_WORD = re.compile(r"[0-9a-z]+")
SCORINGS = ("coverage", "bm25")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits ("Polka-dot cup!" -> ["polka", "dot", "cup"])."""
    return _WORD.findall(text.lower())


class ClusterCaptions:
    """Scores of whole clusters for a text query, by caption coverage (default) or cluster-document BM25."""

    def __init__(self, captions: Sequence[str], labels: np.ndarray, scoring: str = "coverage",
                 k1: float = 1.2, b: float = 0.75, omit_weight: float = 0.25) -> None:  # fmt: skip
        labels = np.asarray(labels, np.int64)
        if len(captions) != len(labels):
            raise InputError(f"{len(captions)} captions but {len(labels)} cluster labels")
        if scoring not in SCORINGS:
            raise InputError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        if k1 < 0 or not 0 <= b <= 1:
            raise InputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        if not omit_weight >= 0:
            raise InputError(f"omit_weight must be >= 0, got {omit_weight}")
        self.scoring, self.k1, self.b, self.omit_weight = scoring, float(k1), float(b), float(omit_weight)
        self.clusters, doc_of_row = np.unique(labels[labels >= 0], return_inverse=True)  # (C,), (N',)
        n_docs = len(self.clusters)
        self.members = np.bincount(doc_of_row, minlength=n_docs).astype(np.float64)  # (C,) captions per cluster
        vocab: dict[str, int] = {}
        term_ids, doc_ids, first = [], [], []  # one entry per token; `first`: its caption's first use of the word
        for doc, caption in zip(doc_of_row.tolist(), (c for c, lab in zip(captions, labels) if lab >= 0)):
            seen: set[int] = set()
            for word in tokenize(caption if isinstance(caption, str) else ""):
                t = vocab.setdefault(word, len(vocab))
                term_ids.append(t)
                doc_ids.append(doc)
                first.append(t not in seen)
                seen.add(t)
        self.vocab = vocab
        term = np.asarray(term_ids, np.int64)  # (T,)
        doc = np.asarray(doc_ids, np.int64)
        self.doc_len = np.bincount(doc, minlength=n_docs).astype(np.float64)  # (C,) tokens per cluster
        key = term * max(n_docs, 1) + doc
        pair, inverse, tf = np.unique(key, return_inverse=True, return_counts=True)  # sorted by term, then doc
        self._term = pair // max(n_docs, 1)  # (P,) postings
        self._doc = pair % max(n_docs, 1)
        self._tf = tf.astype(np.float64)  # (P,) tokens of the term in the cluster
        self._mf = np.bincount(inverse, weights=np.asarray(first, np.float64), minlength=len(pair))  # (P,) members
        self._start = np.searchsorted(self._term, np.arange(len(vocab) + 1))  # (V+1,) postings of term t
        df = np.diff(self._start).astype(np.float64)  # (V,) clusters containing each term
        self.idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        self._share = self._mf / np.maximum(self.members[self._doc], 1)  # (P,) share of members saying the term
        said = self.idf[self._term] * self._share**2  # (P,)
        self._said = np.bincount(self._doc, weights=said, minlength=n_docs)  # (C,) what the cluster says, in all
        avg_len = float(self.doc_len.mean()) if n_docs else 0.0
        self._norm = self.k1 * (1 - self.b + self.b * self.doc_len / max(avg_len, 1e-9))  # (C,) BM25 length term

    def __len__(self) -> int:
        return len(self.clusters)

    def scores(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(clusters, scores), best first, for the clusters sharing at least one word with `text`."""
        total = np.zeros(len(self.clusters))  # (C,)
        unsaid = self._said.copy()  # (C,) what each cluster says that the query does not
        for t in {self.vocab[w] for w in tokenize(text) if w in self.vocab}:
            lo, hi = self._start[t], self._start[t + 1]
            docs = self._doc[lo:hi]
            if self.scoring == "coverage":
                total[docs] += self.idf[t] * self._share[lo:hi]
                unsaid[docs] -= self.idf[t] * self._share[lo:hi] ** 2
            else:
                tf = self._tf[lo:hi]
                total[docs] += self.idf[t] * tf * (self.k1 + 1) / (tf + self._norm[docs])
        hit = np.flatnonzero(total > 0)  # clusters sharing a word with the query
        if self.scoring == "coverage" and self.omit_weight:
            total = total - self.omit_weight * np.maximum(unsaid, 0.0)  # max: float round-off only
        order = hit[np.lexsort((self.clusters[hit], -total[hit]))]  # ties: the smaller cluster id
        return self.clusters[order], total[order]

    def best(self, texts: Sequence[str]) -> list[int | None]:
        """The best cluster per text, None when no cluster shares a word with it."""
        out = []
        for text in texts:
            clusters, _ = self.scores(text)
            out.append(int(clusters[0]) if len(clusters) else None)
        return out
