"""Neighbour search over an index directory: text, image or embedding queries -> `Neighbors`.

Re-Imagen mode asks for `same_cluster=True`: one cluster is chosen and its k best members are
returned (re-scored exactly against the query when the index stores full vectors), so demonstrations
show one subject. How the cluster is chosen (`choose_cluster`):
- "vectors": from a shortlist of `max(fetch_factor * k, min_fetch)` dense neighbours, the cluster
  whose k best shortlisted members score highest in total;
- "captions": text queries only, the cluster whose members' captions most consistently say the query's
  words (`caption_scoring="coverage"`, the default; or "bm25", each cluster's captions as one document:
  `retrieval.lexical`); a query sharing no word with any caption falls back to "vectors";
- "auto" (default): "captions" for text queries when the metadata has captions, else "vectors".

Which members of the chosen cluster become the k results (`member_order`):
- "query": the members closest to the query (a catalog photo already in the prompted scene or style
  comes first);
- "central": the members closest to the rest of their cluster (for unit vectors, the largest
  `x_i . (S - x_i)`, S the cluster's sum), i.e. the views the cluster agrees on; a recoloured,
  restyled or turned member is an outlier and comes last. Needs vectors the index can reconstruct;
  otherwise it falls back to "query".

Scores are FAISS's: inner products for metric "ip" (higher is better), squared L2 distances for
"l2" (lower is better).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retrieval.errors import IndexCorruptError, IndexLoadError, IndexMismatchError
from retrieval.index import LoadedIndex, load_index
from retrieval.reader import load_image
from suti.errors import InputError

CLUSTER_CHOICES = ("auto", "captions", "vectors")
MEMBER_ORDERS = ("query", "central")
DEFAULT_MEMBER_ORDER = "query"


class Embedder(Protocol):
    dim: int

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...

    def embed_images(self, images: list[Any]) -> np.ndarray: ...


@dataclass
class Neighbors:
    """Results of one query, best first. Images are loaded on first access of `.images`."""

    rows: np.ndarray  # (n,) int64 positions in the index (= metadata rows)
    scores: np.ndarray  # (n,) float32 FAISS scores
    ids: list[str]
    captions: list[str]
    clusters: np.ndarray  # (n,) int64, -1 when unknown
    urls: list[str]
    paths: list[str | None]
    cluster: int | None = None  # the chosen cluster (same_cluster=True)
    chosen_by: str | None = None  # "vectors" or "captions": how that cluster was chosen
    _retriever: Any = field(default=None, repr=False)
    _images: list | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def images(self) -> list:
        """RGB PIL images of the neighbours (from the image source or the metadata paths)."""
        if self._images is None:
            self._images = [self._retriever.image(int(r)) for r in self.rows] if len(self.rows) else []
        return self._images


class NeighborRetriever:
    """Search an index directory; results carry their row-aligned metadata."""

    def __init__(self, index_dir: str | os.PathLike, metadata: Any = None, embedder: Embedder | None = None,
                 image_source: Any = None, mmap: bool = True, verify: bool = True,
                 cluster_column: str | None = None, fetch_factor: int = 4, min_fetch: int = 64,
                 choose_cluster: str = "auto", caption_scoring: str = "coverage",
                 member_order: str = DEFAULT_MEMBER_ORDER) -> None:  # fmt: skip
        import pandas as pd

        from retrieval.lexical import SCORINGS

        self.choose_cluster = _check_choice(choose_cluster)
        self.member_order = _check_order(member_order)
        if caption_scoring not in SCORINGS:
            raise InputError(f"caption_scoring must be one of {SCORINGS}, got {caption_scoring!r}")
        self.caption_scoring = caption_scoring

        self.index: LoadedIndex = load_index(index_dir, mmap=mmap, verify=verify,
                                             expected_dim=None if embedder is None else int(embedder.dim))  # fmt: skip
        self.embedder = embedder
        self.image_source = image_source
        self.fetch_factor, self.min_fetch = int(fetch_factor), int(min_fetch)
        if metadata is None:
            metadata = self._metadata_from_dir(Path(index_dir), verify)
        elif isinstance(metadata, (str, os.PathLike)):
            metadata = pd.read_parquet(metadata)
        n = len(self.index)
        if metadata is not None and len(metadata) != n:
            raise IndexMismatchError(f"metadata has {len(metadata)} rows but the index holds {n} vectors")
        self.metadata = None if metadata is None else metadata.reset_index(drop=True)
        if cluster_column is not None and (self.metadata is None or cluster_column not in self.metadata.columns):
            raise InputError(f"cluster_column {cluster_column!r} is not a metadata column")
        self.cluster_column = cluster_column or self._default_cluster_column()
        self._members: dict[int, np.ndarray] = {}
        if self.cluster_column is not None:
            labels = self.metadata[self.cluster_column].fillna(-1).to_numpy(np.int64)
            order = np.argsort(labels, kind="stable")
            uniq, starts = np.unique(labels[order], return_index=True)
            self._members = dict(zip(uniq.tolist(), np.split(order, starts[1:])))
            self._labels = labels
        self._lexical = None  # built on the first caption-chosen search

    def _metadata_from_dir(self, directory: Path, verify: bool):
        import pandas as pd

        from retrieval.atomic import sha256_file

        name = self.index.infos.metadata.get("file")
        if not name:  # the index was built without metadata (a stray file from an older build is ignored)
            return None
        path = directory / name
        if Path(name).name != name or not path.is_file():
            raise IndexLoadError(f"index_infos.json names metadata file {name!r}, which is missing")
        expected = self.index.infos.metadata.get("sha256")
        if verify and expected and sha256_file(path) != expected:
            raise IndexCorruptError(f"{path} fails its sha256 check against index_infos.json")
        return pd.read_parquet(path)

    def _default_cluster_column(self) -> str | None:
        if self.metadata is None:
            return None
        return next((c for c in ("cluster_id", "cluster") if c in self.metadata.columns), None)

    # ------------------------------------------------------------------ queries

    def embed_query(self, query: Any) -> tuple[np.ndarray, bool]:
        """((Q, D) float32 query vectors, whether the query was a batch)."""
        from PIL import Image

        if isinstance(query, np.ndarray):
            if query.ndim not in (1, 2):
                raise InputError(f"embedding query must be (D,) or (Q, D), got shape {query.shape}")
            return np.atleast_2d(query).astype(np.float32), query.ndim == 2
        single = isinstance(query, (str, Image.Image, Path))
        items = [query] if single else list(query) if isinstance(query, (list, tuple)) else None
        if not items:
            raise InputError(f"query must be text, an image, a Path, an embedding or a non-empty list, "
                             f"got {type(query).__name__}")  # fmt: skip
        if self.embedder is None:
            raise InputError("text and image queries need an embedder; pass embedder=... or query with an embedding")
        if all(isinstance(q, str) for q in items):
            return self.embedder.embed_texts(items), not single
        if all(isinstance(q, (Image.Image, Path)) for q in items):
            return self.embedder.embed_images([load_image(q, "query image") for q in items]), not single
        raise InputError("a batch query must be all strings or all images")

    def search(self, query: Any, k: int = 5, same_cluster: bool = True,
               choose_cluster: str | None = None, member_order: str | None = None) -> Neighbors | list[Neighbors]:
        """Neighbours of one query (text, PIL image, Path, (D,) embedding), or a list for a batch
        (list of texts or images, (Q, D) embeddings). -1 results are dropped. `choose_cluster` and
        `member_order` override the retriever's settings for this call (see the module docstring)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        choice = self.choose_cluster if choose_cluster is None else _check_choice(choose_cluster)
        order = self.member_order if member_order is None else _check_order(member_order)
        if same_cluster and self.cluster_column is None:
            raise InputError("metadata has no 'cluster_id' or 'cluster' column; search with same_cluster=False")
        vectors, batch = self.embed_query(query)
        texts = [query] if isinstance(query, str) else list(query) if _all_text(query) else None
        if choice == "captions" and same_cluster and texts is None:
            raise InputError("choose_cluster='captions' needs text queries (this one is an image or an embedding)")
        chosen = [None] * len(vectors)
        if same_cluster and texts is not None and choice != "vectors" and self._has_captions():
            chosen = self._caption_index().best(texts)
        n = len(self.index)
        fetch = min(n, max(self.fetch_factor * k, self.min_fetch)) if same_cluster else min(n, int(k))
        scores, rows = self.index.search(vectors, fetch)
        out = []
        for q, s, r, c in zip(vectors, scores, rows, chosen):
            keep = r >= 0
            s, r = s[keep], r[keep]
            out.append(self._one_cluster(q, s, r, int(k), c, order) if same_cluster else self._neighbors(r[:k], s[:k]))
        return out if batch else out[0]

    def _has_captions(self) -> bool:
        return self.metadata is not None and "caption" in self.metadata.columns

    def _caption_index(self):
        from retrieval.lexical import ClusterCaptions

        if self._lexical is None:
            captions = self.metadata["caption"].fillna("").astype(str).tolist()
            self._lexical = ClusterCaptions(captions, self._labels, scoring=self.caption_scoring)
        return self._lexical

    def _one_cluster(self, q: np.ndarray, scores: np.ndarray, rows: np.ndarray, k: int,
                     chosen: int | None = None, order: str = "query") -> Neighbors:  # fmt: skip
        """The k first members (in `order`) of `chosen`, or of the cluster the dense shortlist favours."""
        higher = 1.0 if self.index.infos.metric == "ip" else -1.0
        labels = self._labels[rows]
        sim = higher * scores
        floor = float(sim.min()) if len(sim) else 0.0  # no unlisted member can score above the shortlist's worst
        best, how = chosen, "captions"
        if best is None:
            eligible = labels >= 0
            if not eligible.any():
                return self._neighbors(rows[:0], scores[:0])
            best_score, how = -np.inf, "vectors"
            for c in dict.fromkeys(labels[eligible].tolist()):  # clusters in rank order
                top = np.sort(sim[labels == c])[::-1][:k]
                total = float(top.sum() + floor * (k - len(top)))
                if total > best_score + 1e-7:
                    best, best_score = c, total
        exact = self._ordered_members(best, k, order, q, how)
        if exact is not None:
            return exact
        mine = labels == best  # shortlisted members first; the rest score the shortlist's worst (a bound)
        rest = np.setdiff1d(self._members[best], rows[mine])[: max(0, k - int(mine.sum()))]
        picked = np.concatenate([rows[mine][:k], rest])
        return self._neighbors(picked, np.concatenate([scores[mine][:k], np.full(len(rest), higher * floor)]),
                               best, how)  # fmt: skip

    def cluster_members(self, cluster: int, k: int, member_order: str = "central", query: Any = None) -> Neighbors:
        """The k first members of `cluster` in `member_order` ("query" needs `query`: text, image or
        embedding; scores are the query's, or each member's centrality without one)."""
        order = _check_order(member_order)
        if self.cluster_column is None or cluster not in self._members:
            raise InputError(f"cluster {cluster!r} is not a cluster of this index")
        if order == "query" and query is None:
            raise InputError("member_order='query' needs a query")
        q = None if query is None else self.embed_query(query)[0][0]
        found = self._ordered_members(int(cluster), int(k), order, q, None)
        if found is None:
            raise InputError("this index cannot reconstruct its vectors, so members cannot be ordered")
        return found

    def _ordered_members(self, cluster: int, k: int, order: str, q: np.ndarray | None,
                         how: str | None) -> Neighbors | None:  # fmt: skip
        """Every member of `cluster` re-scored exactly, k returned in `order`; None without stored vectors."""
        higher = 1.0 if self.index.infos.metric == "ip" else -1.0
        members = self._members[cluster]
        stored = self.index.reconstruct(members)  # (n, D) or None
        if stored is None:
            return None
        central = _centrality(stored, higher)
        if q is None:
            member_scores = central
        elif higher > 0:
            member_scores = stored @ q
        else:
            member_scores = ((stored - q) ** 2).sum(axis=1)
        rank = central if order == "central" else higher * member_scores
        picked = np.lexsort((members, -rank))[:k]
        return self._neighbors(members[picked], np.asarray(member_scores[picked], np.float32), cluster, how)

    def _neighbors(self, rows: np.ndarray, scores: np.ndarray, cluster: int | None = None,
                   chosen_by: str | None = None) -> Neighbors:  # fmt: skip
        rows = np.asarray(rows, np.int64)
        meta = self.metadata
        if meta is None:
            ids, caps, urls, paths = [str(r) for r in rows], [""] * len(rows), [""] * len(rows), [None] * len(rows)
        else:
            part = meta.iloc[rows]
            ids = part["id"].astype(str).tolist() if "id" in part else [str(r) for r in rows]
            caps = part["caption"].astype(str).tolist() if "caption" in part else [""] * len(rows)
            urls = part["url"].fillna("").astype(str).tolist() if "url" in part else [""] * len(rows)
            paths = [p if isinstance(p, str) else None for p in part["path"]] if "path" in part else [None] * len(rows)
        clusters = self._labels[rows] if self.cluster_column is not None else np.full(len(rows), -1, np.int64)
        return Neighbors(rows, np.asarray(scores, np.float32), ids, caps, clusters, urls, paths, cluster, chosen_by,
                         self)  # fmt: skip

    def image(self, row: int):
        """The RGB image of one index row (image source by `source_row`, else the metadata path)."""
        meta = self.metadata
        if self.image_source is not None:
            pos = int(meta["source_row"].iloc[row]) if meta is not None and "source_row" in meta else row
            return load_image(self.image_source[pos]["image"], f"row {row}")
        if meta is not None and "path" in meta and isinstance(meta["path"].iloc[row], str):
            return load_image(meta["path"].iloc[row], f"row {row}")
        raise InputError(f"row {row} has no image: pass image_source=... or index metadata with a 'path' column")


def _centrality(vectors: np.ndarray, higher: float) -> np.ndarray:
    """(n,) how close each member is to the others, larger = more central; O(n D), not O(n^2 D)."""
    x = vectors.astype(np.float64)  # (n, D)
    n, total = len(x), x.sum(axis=0)  # total: (D,)
    if n < 2:
        return np.zeros(n)
    if higher > 0:  # mean inner product with the other members
        return (x @ total - (x * x).sum(axis=1)) / (n - 1)
    sq = (x * x).sum(axis=1)  # minus the mean squared distance to the other members
    return -(n * sq + sq.sum() - 2 * (x @ total)) / (n - 1)


def _check_choice(choice: str) -> str:
    if choice not in CLUSTER_CHOICES:
        raise InputError(f"choose_cluster must be one of {', '.join(CLUSTER_CHOICES)}, got {choice!r}")
    return choice


def _check_order(order: str) -> str:
    if order not in MEMBER_ORDERS:
        raise InputError(f"member_order must be one of {', '.join(MEMBER_ORDERS)}, got {order!r}")
    return order


def _all_text(query: Any) -> bool:
    return isinstance(query, (list, tuple)) and bool(query) and all(isinstance(q, str) for q in query)
