"""The whole path from captioned images to a searchable index directory (the clip-retrieval `runner`).

    rows --embed--> OUT/embeddings/ --mine (optional)--> OUT/mine/ --index--> OUT/index.faiss ...

OUT also gets `embedder.json` (which open_clip model made the vectors), so `open_retriever(OUT)`
can embed text and image queries with the same model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.atomic import write_json
from retrieval.embed import ClipEmbedder, ClipSpec, EmbedStats, embed_rows, load_embedder
from retrieval.index import build_index
from retrieval.index_infos import IndexInfos
from retrieval.mine import MineConfig, mine
from retrieval.search import DEFAULT_MEMBER_ORDER, NeighborRetriever
from retrieval.shards import load_embeddings
from suti.errors import ConfigError, InputError

EMBEDDER_FILE = "embedder.json"


@dataclass
class BuildReport:
    """What `build_from_rows` did at each stage."""

    out_dir: str
    embed: EmbedStats
    mine: dict[str, Any] | None
    index: IndexInfos


def build_from_rows(source: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike, embedder: ClipEmbedder, *,
                    mine_config: MineConfig | None = None, memory_budget_bytes: int | None = None,
                    batch_size: int = 64, shard_size: int = 4096, progress: bool = True, seed: int = 0,
                    engine: str = "local", engine_options: Mapping[str, Any] | None = None,
                    **index_kwargs: Any) -> BuildReport:  # fmt: skip
    """Embed (resumable), optionally mine clusters, and index the image embeddings under `out_dir`.

    Mining runs on `engine` ("local" or "spark", with `engine_options` such as master="local[2]").
    The index's recall is measured with caption embeddings as queries (text -> image search).
    """
    out = Path(out_dir)
    stats = embed_rows(source, out / "embeddings", embedder, batch_size=batch_size, shard_size=shard_size,
                       progress=progress)  # fmt: skip
    emb = load_embeddings(out / "embeddings")
    if len(emb) == 0:
        raise InputError(f"no readable image in the catalog ({stats.images_skipped} unreadable skipped, e.g. "
                         f"{stats.skipped[:1]})")  # fmt: skip
    mine_stats = None
    if mine_config is not None:
        result = mine(emb.image, emb.text, emb.metadata["url"].tolist(), mine_config, engine=engine,
                      **dict(engine_options or {}))  # fmt: skip
        result.save(out / "mine")
        mine_stats = result.stats
        keep = result.kept
        if not keep.any():
            raise ConfigError(f"mining kept no rows ({result.stats['dropped']}); loosen the thresholds")
        metadata = result.kept_rows(emb.metadata)
        emb = emb.select(keep)
        emb.metadata = metadata
    rng = np.random.default_rng(seed)
    queries = emb.text[np.sort(rng.choice(len(emb), min(len(emb), 200), replace=False))]
    infos = build_index(emb.image, out, memory_budget_bytes=memory_budget_bytes, metadata=emb.metadata,
                        queries=queries, seed=seed, **index_kwargs)  # fmt: skip
    write_json(out / EMBEDDER_FILE, embedder.spec.to_dict())
    return BuildReport(str(out), stats, mine_stats, infos)


def read_embedder_spec(index_dir: str | os.PathLike) -> ClipSpec:
    """The `ClipSpec` recorded beside an index (ConfigError when absent)."""
    path = Path(index_dir) / EMBEDDER_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: pass the model explicitly (--model-name/--checkpoint)")
    try:
        return ClipSpec.from_dict(json.loads(path.read_text()))
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON ({e})") from e


def open_retriever(index_dir: str | os.PathLike, embedder: ClipEmbedder | None = None, spec: ClipSpec | None = None,
                   image_source: Any = None, mmap: bool = True, choose_cluster: str = "auto",
                   member_order: str = DEFAULT_MEMBER_ORDER) -> NeighborRetriever:  # fmt: skip
    """A retriever for `index_dir` whose embedder is given, built from `spec`, or from `embedder.json`."""
    if embedder is None:
        embedder = load_embedder(spec or read_embedder_spec(index_dir))
    return NeighborRetriever(index_dir, embedder=embedder, image_source=image_source, mmap=mmap,
                             choose_cluster=choose_cluster, member_order=member_order)  # fmt: skip
