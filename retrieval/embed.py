"""open_clip image and caption embeddings, batched, L2-normalised, written as resumable shards.

The only module of `retrieval/` that touches a model (the clip-retrieval `mapper` + `runner`):

    spec = ClipSpec("tiny-clip", checkpoint="ckpt.pt", config="tiny-clip.json")
    embedder = load_embedder(spec)            # offline: a local checkpoint, never a download
    stats = embed_rows(rows, "emb/", embedder, shard_size=4096)   # re-running skips done shards
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.atomic import sha256_file, write_json
from retrieval.reader import RESERVED, iter_shards, load_image, split_row
from retrieval.shards import INFO_FILE, completed_shards, read_info, write_shard
from suti.errors import ConfigError, InputError, ModelLoadError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
SKIP_EXAMPLES = 20  # unreadable-image messages kept in EmbedStats.skipped


@dataclass(frozen=True)
class ClipSpec:
    """Which open_clip model to build and which local weights to load into it."""

    model_name: str  # a registered config name (built-in or added through `config`) or "local-dir:PATH"
    checkpoint: str | None = None  # local weights file (.pt/.bin/.safetensors); never a download tag
    config: str | None = None  # a model config .json (or a directory of them) to register first
    device: str = "cpu"
    precision: str = "fp32"
    allow_random_init: bool = False  # only for tests: no checkpoint => random weights

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClipSpec:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "model_name" not in known:
            raise ConfigError("embedder description has no 'model_name'")
        return cls(**known)


@dataclass
class ClipEmbedder:
    """An open_clip model with its image transform and tokenizer; returns unit-norm float32 rows."""

    model: Any
    preprocess: Any
    tokenizer: Any
    spec: ClipSpec
    dim: int
    checkpoint_sha256: str | None = None
    batch_size: int = 64

    def embed_images(self, images: Sequence[Any], batch_size: int | None = None) -> np.ndarray:
        """(N, D) embeddings of PIL images or image paths."""
        import torch

        bs = self._batch(batch_size)
        out = np.empty((len(images), self.dim), np.float32)
        for a in range(0, len(images), bs):
            chunk = images[a : a + bs]
            pixels = torch.stack([self.preprocess(load_image(im, f"image {a + j}")) for j, im in enumerate(chunk)])
            with torch.inference_mode():
                feats = self.model.encode_image(pixels.to(self.spec.device, dtype=self._dtype()))
            out[a : a + len(pixels)] = _normalise(feats.float().cpu().numpy())
        return out

    def embed_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """(N, D) embeddings of captions or prompts."""
        import torch

        if isinstance(texts, str):
            raise InputError("embed_texts expects a list of strings, got one string")
        bs = self._batch(batch_size)
        out = np.empty((len(texts), self.dim), np.float32)
        for a in range(0, len(texts), bs):
            chunk = list(texts[a : a + bs])
            if not all(isinstance(t, str) for t in chunk):
                raise InputError("embed_texts expects strings")
            with torch.inference_mode():
                feats = self.model.encode_text(self.tokenizer(chunk).to(self.spec.device))
            out[a : a + len(chunk)] = _normalise(feats.float().cpu().numpy())
        return out

    def _batch(self, batch_size: int | None) -> int:
        bs = self.batch_size if batch_size is None else batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise InputError(f"batch_size must be a positive integer, got {bs!r}")
        return bs

    def _dtype(self):
        import torch

        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.spec.precision, torch.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def load_embedder(spec: ClipSpec, batch_size: int = 64) -> ClipEmbedder:
    """Build the open_clip model of `spec` and load its local checkpoint (typed errors, no downloads)."""
    import open_clip
    import torch

    if spec.config is not None:
        cfg = Path(spec.config)
        if not cfg.exists():
            raise ConfigError(f"open_clip model config {cfg} not found")
        open_clip.add_model_config(cfg)
    local_dir = spec.model_name.startswith("local-dir:")
    if not local_dir and spec.model_name not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip model {spec.model_name!r}; pass its config .json to register it")
    if spec.checkpoint is None and not (local_dir or spec.allow_random_init):
        raise ConfigError(f"no checkpoint given for {spec.model_name!r}; random weights make meaningless embeddings")
    digest = None
    if spec.checkpoint is not None:
        if not Path(spec.checkpoint).is_file():
            raise ModelLoadError(f"checkpoint {spec.checkpoint} not found")
        digest = sha256_file(spec.checkpoint)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.model_name, pretrained=spec.checkpoint, device=spec.device, precision=spec.precision
        )
        tokenizer = open_clip.get_tokenizer(spec.model_name)
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        where = f" from {spec.checkpoint}" if spec.checkpoint else ""
        raise ModelLoadError(f"cannot load open_clip model {spec.model_name!r}{where}: {str(e).splitlines()[0]}") from e
    model.eval()
    with torch.inference_mode():
        dim = int(model.encode_text(tokenizer(["probe"]).to(spec.device)).shape[-1])
    return ClipEmbedder(model, preprocess, tokenizer, spec, dim, digest, batch_size)


@dataclass
class EmbedStats:
    """What an `embed_rows` run did."""

    out_dir: str
    rows: int = 0  # rows in the shards written by this run
    shards_written: int = 0
    shards_skipped: int = 0
    seconds: float = 0.0  # wall time of decoding + embedding + writing
    images_per_second: float = 0.0
    dim: int = 0
    dtype: str = "float32"
    shards: list[int] = field(default_factory=list)  # indices written by this run
    images_skipped: int = 0  # unreadable images left out by this run (not fatal)
    skipped: list[str] = field(default_factory=list)  # the first SKIP_EXAMPLES reasons ("row 7: cannot read ...")


def embed_rows(source: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike, embedder: ClipEmbedder,
               batch_size: int = 64, shard_size: int = 4096, dtype: str = "float32",
               progress: bool = True) -> EmbedStats:  # fmt: skip
    """Embed every row's image and caption into shards under `out_dir`; completed shards are skipped.

    A row whose image cannot be read (missing file, corrupt bytes) is left out of its shard and
    counted in `EmbedStats.images_skipped`; `source_row` keeps the input position of every kept row.
    A malformed row (no caption, no image field) is an InputError; so is an empty source.
    """
    from tqdm import tqdm

    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise InputError(f"shard_size must be a positive integer, got {shard_size!r}")
    out = Path(out_dir)
    info = {
        "format_version": FORMAT_VERSION,
        "model": {"model_name": embedder.spec.model_name, "checkpoint_sha256": embedder.checkpoint_sha256},
        "dim": embedder.dim,
        "dtype": dtype,
        "shard_size": shard_size,
        "normalized": True,
    }
    _check_resume(out, info)
    write_json(out / INFO_FILE, info)
    done = completed_shards(out)
    total = len(source) if hasattr(source, "__len__") else None
    stats = EmbedStats(out_dir=str(out), dim=embedder.dim, dtype=dtype)
    start = time.perf_counter()
    with tqdm(total=total, unit="img", desc="embed", disable=not progress) as bar:
        if done and total is not None:
            bar.update(min(total, sum(min(shard_size, total - i * shard_size) for i in done if i * shard_size < total)))
        for index, first, rows in iter_shards(source, shard_size, done):
            images, records = _readable(rows, first, stats)
            img = embedder.embed_images(images, batch_size)
            txt = embedder.embed_texts([rec["caption"] for rec in records], batch_size)
            write_shard(out, index, img.astype(dtype), txt.astype(dtype), _frame(records))
            stats.rows += len(records)
            stats.shards_written += 1
            stats.shards.append(index)
            bar.update(len(rows))
    stats.shards_skipped = len(done)
    if not done and not stats.shards_written:
        raise InputError("the catalog is empty: no rows to embed")
    stats.seconds = time.perf_counter() - start
    stats.images_per_second = stats.rows / stats.seconds if stats.rows and stats.seconds > 0 else 0.0
    log.info("embedded %d rows in %.1f s (%.1f images/s)", stats.rows, stats.seconds, stats.images_per_second)
    return stats


def _readable(rows: list, first: int, stats: EmbedStats) -> tuple[list, list[dict[str, Any]]]:
    """(decoded images, metadata records) of the rows whose image can be read; the others are counted."""
    images, records = [], []
    for j, row in enumerate(rows):
        value, record = split_row(row, first + j)
        try:
            images.append(load_image(value, f"row {record['source_row']}"))
        except InputError as e:
            stats.images_skipped += 1
            if len(stats.skipped) < SKIP_EXAMPLES:
                stats.skipped.append(str(e))
            log.warning("skipping unreadable image: %s", e)
            continue
        records.append(record)
    return images, records


def _check_resume(out: Path, info: dict[str, Any]) -> None:
    """ConfigError when `out` holds shards made with another model, dim, dtype or shard size."""
    old = read_info(out)
    if old is None:
        if completed_shards(out):
            raise ConfigError(f"{out} holds shards but no {INFO_FILE}; use an empty directory")
        return
    for key in ("model", "dim", "dtype", "shard_size"):
        if old.get(key) != info[key]:
            raise ConfigError(f"{out} was embedded with {key}={old.get(key)!r}, this run has {info[key]!r}; "
                              "resume with the same settings or use a new directory")  # fmt: skip


def _frame(records: list[dict[str, Any]]):
    """Metadata records as a DataFrame with the reserved columns first and stable dtypes."""
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=None if records else list(RESERVED))
    frame["id"] = frame["id"].astype(str)
    frame["source_row"] = frame["source_row"].astype("int64")
    frame["cluster"] = frame["cluster"].astype("int64")
    return frame
