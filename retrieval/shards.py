"""Embedding shards on disk: writer and reader (the clip-retrieval `writer` stage).

Layout of an embedding directory (shard i holds input rows [i * shard_size, (i + 1) * shard_size)):

    embed_info.json                   model, dim, dtype, shard_size (a resumed run must match it)
    img_emb/img_emb_00000.npy         (n, D) L2-normalised image embeddings
    text_emb/text_emb_00000.npy       (n, D) L2-normalised caption embeddings
    metadata/metadata_00000.parquet   n rows: id, source_row, url, caption, cluster, path, extra columns

Every file is written atomically and the metadata file last, so a shard whose metadata file exists is
complete; a crash leaves at most temporary files behind, and a resumed run rewrites only missing shards.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.atomic import write_npy, write_parquet
from suti.errors import InputError

INFO_FILE = "embed_info.json"
IMG_DIR, TXT_DIR, META_DIR = "img_emb", "text_emb", "metadata"
_META_RE = re.compile(r"^metadata_(\d{5,})\.parquet$")


@dataclass(frozen=True)
class ShardPaths:
    """The three files of one shard."""

    image: Path
    text: Path
    metadata: Path


def shard_paths(out_dir: str | os.PathLike, index: int) -> ShardPaths:
    out = Path(out_dir)
    return ShardPaths(
        image=out / IMG_DIR / f"img_emb_{index:05d}.npy",
        text=out / TXT_DIR / f"text_emb_{index:05d}.npy",
        metadata=out / META_DIR / f"metadata_{index:05d}.parquet",
    )


def write_shard(out_dir: str | os.PathLike, index: int, image: np.ndarray, text: np.ndarray, metadata) -> ShardPaths:
    """Write one shard: both embedding arrays first, the metadata (the completion marker) last."""
    if not (len(image) == len(text) == len(metadata)):
        raise InputError(f"shard {index}: {len(image)} image rows, {len(text)} text rows, "
                         f"{len(metadata)} metadata rows")  # fmt: skip
    paths = shard_paths(out_dir, index)
    write_npy(paths.image, image)
    write_npy(paths.text, text)
    write_parquet(paths.metadata, metadata)
    return paths


def completed_shards(out_dir: str | os.PathLike) -> set[int]:
    """Indices of shards whose three files all exist."""
    meta_dir = Path(out_dir) / META_DIR
    if not meta_dir.is_dir():
        return set()
    done = set()
    for entry in meta_dir.iterdir():
        m = _META_RE.match(entry.name)
        if m:
            i = int(m.group(1))
            p = shard_paths(out_dir, i)
            if p.image.is_file() and p.text.is_file():
                done.add(i)
    return done


def read_info(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The directory's `embed_info.json`, or None when the directory holds no embedding run yet."""
    path = Path(out_dir) / INFO_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not readable JSON ({e}); remove the embedding directory and run again") from e


@dataclass
class Embeddings:
    """Row-aligned image embeddings, text embeddings and metadata (row i of each is one pair)."""

    image: np.ndarray  # (N, D) float32
    text: np.ndarray  # (N, D) float32
    metadata: Any  # pandas.DataFrame with N rows, RangeIndex

    def __len__(self) -> int:
        return len(self.metadata)

    def select(self, mask_or_rows: np.ndarray) -> Embeddings:
        """A row subset (boolean mask or integer positions), still row-aligned."""
        rows = np.asarray(mask_or_rows)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise InputError(f"mask has shape {rows.shape}, expected ({len(self)},)")
            rows = np.flatnonzero(rows)
        meta = self.metadata.iloc[rows].reset_index(drop=True)
        return Embeddings(self.image[rows], self.text[rows], meta)


def load_embeddings(out_dir: str | os.PathLike, dtype: str = "float32") -> Embeddings:
    """Concatenate all shards of an embedding directory in order (InputError if one is missing)."""
    import pandas as pd

    out = Path(out_dir)
    info = read_info(out)
    if info is None:
        raise InputError(f"{out} is not an embedding directory (no {INFO_FILE})")
    done = sorted(completed_shards(out))
    if not done:
        raise InputError(f"{out} holds no complete embedding shard")
    if done != list(range(len(done))):
        missing = sorted(set(range(done[-1] + 1)) - set(done))
        raise InputError(f"{out}: shard(s) {missing[:5]} missing; run the embedding again to resume")
    images, texts, metas = [], [], []
    for i in done:
        p = shard_paths(out, i)
        img, txt = np.load(p.image, allow_pickle=False), np.load(p.text, allow_pickle=False)
        meta = pd.read_parquet(p.metadata)
        if not (img.ndim == txt.ndim == 2 and len(img) == len(txt) == len(meta) and img.shape[1] == txt.shape[1]):
            raise InputError(f"shard {i} of {out} is inconsistent: image {img.shape}, text {txt.shape}, "
                             f"metadata {len(meta)} rows")  # fmt: skip
        images.append(img.astype(dtype, copy=False))
        texts.append(txt.astype(dtype, copy=False))
        metas.append(meta)
    meta = pd.concat(metas, ignore_index=True)
    return Embeddings(np.concatenate(images), np.concatenate(texts), meta)
