"""Retrieval: CLIP embeddings, cluster mining, FAISS index, neighbour search.

Arrays in, arrays out; only `embed` touches a model. Importing this package loads numpy only
(torch, open_clip, faiss, pandas and datasets are imported inside the functions that need them).

    embed   load_embedder(ClipSpec(...)), embed_rows(rows, dir, embedder) -> shards + metadata
    mine    mine(image, text, urls, MineConfig(), engine="local"|"spark") -> MineResult;
            noise_removal_metrics(...); retrieval.spark.mine_frame(spark_df) at web scale
    index   build_index(vectors, dir, memory_budget_bytes=...) -> IndexInfos; load_index(dir)
    search  NeighborRetriever(dir, embedder=...).search(query, k, same_cluster=True) -> Neighbors
            (a text query's cluster is chosen by caption coverage over whole clusters; lexical.py)
"""

from retrieval.embed import ClipEmbedder, ClipSpec, EmbedStats, embed_rows, load_embedder
from retrieval.errors import IndexCorruptError, IndexLoadError, IndexMismatchError
from retrieval.index import LoadedIndex, build_index, load_index
from retrieval.index_infos import IndexInfos, read_infos
from retrieval.index_plan import IndexPlan, plan_index
from retrieval.lexical import ClusterCaptions
from retrieval.mine import MineConfig, MineResult, mine, noise_removal_metrics
from retrieval.reader import read_captions_folder, read_dataset_dir
from retrieval.runner import BuildReport, build_from_rows, open_retriever
from retrieval.search import NeighborRetriever, Neighbors
from retrieval.shards import Embeddings, load_embeddings
from retrieval.urls import normalize_url

__all__ = [
    "BuildReport",
    "ClipEmbedder",
    "ClipSpec",
    "ClusterCaptions",
    "EmbedStats",
    "Embeddings",
    "IndexCorruptError",
    "IndexInfos",
    "IndexLoadError",
    "IndexMismatchError",
    "IndexPlan",
    "LoadedIndex",
    "MineConfig",
    "MineResult",
    "NeighborRetriever",
    "Neighbors",
    "build_from_rows",
    "build_index",
    "embed_rows",
    "load_embedder",
    "load_embeddings",
    "load_index",
    "mine",
    "noise_removal_metrics",
    "normalize_url",
    "open_retriever",
    "plan_index",
    "read_captions_folder",
    "read_dataset_dir",
    "read_infos",
]
