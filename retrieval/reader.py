"""Inputs of the embedding stage (the clip-retrieval `reader`): rows with an image and a caption.

A row is a mapping with `image` (PIL image, file path, or a `datasets` image dict {"bytes", "path"})
or `path`, and `caption`; optional `id`, `url`, `cluster` and any scalar extra columns. Sources:
a list or other sequence of rows, a `datasets.Dataset`, any iterable of rows, a folder with
`captions.jsonl`, or a `datasets` save_to_disk directory.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from suti.errors import InputError

CAPTIONS_FILE = "captions.jsonl"
RESERVED = ("id", "source_row", "url", "caption", "cluster", "path")
_SCALARS = (str, int, float, bool, type(None))


def read_captions_folder(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a folder of images described by `captions.jsonl` lines {"file", "caption", "url"?, ...}."""
    root = Path(folder).expanduser().absolute()
    listing = root / CAPTIONS_FILE
    if not listing.is_file():
        raise InputError(f"{root} has no {CAPTIONS_FILE} (one JSON object per line: file, caption, url)")
    rows = []
    for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise InputError(f"{listing}:{n} is not JSON ({e})") from e
        if not (isinstance(item, dict) and isinstance(item.get("file"), str) and isinstance(item.get("caption"), str)):
            raise InputError(f"{listing}:{n} needs string fields 'file' and 'caption'")
        path = (root / item.pop("file")).absolute()
        if not path.is_file():
            raise InputError(f"{listing}:{n}: image {path.name!r} not found in {root}")
        rows.append({**item, "path": str(path)})
    if not rows:
        raise InputError(f"{listing} lists no images")
    return rows


def read_dataset_dir(path: str | os.PathLike, split: str | None = None):
    """A `datasets.Dataset` from a save_to_disk directory.

    `split` picks a split of a DatasetDict, or the rows whose `split` column equals it (the subject
    world keeps its splits in a column). Selecting renumbers rows (`source_row` in the embedding
    metadata counts rows of the returned dataset), so use the same selection as a retriever's
    image source.
    """
    import datasets

    path = Path(path).expanduser()
    if not path.is_dir():
        raise InputError(f"dataset directory {path} not found")
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise InputError(f"{path} is not a `datasets` save_to_disk directory ({e})") from e
    if isinstance(ds, datasets.DatasetDict):
        if split is None or split not in ds:
            raise InputError(f"{path} holds splits {sorted(ds)}; choose one with split=...")
        ds = ds[split]
    elif split is not None:
        if "split" not in ds.column_names:
            raise InputError(f"{path} is a single dataset without a 'split' column; drop --split")
        ds = ds.select([i for i, s in enumerate(ds["split"]) if s == split])
        if len(ds) == 0:
            raise InputError(f"{path} has no rows with split {split!r}")
    for column in ("caption",):
        if column not in ds.column_names:
            raise InputError(f"dataset {path} has no {column!r} column (columns: {ds.column_names})")
    return ds


def iter_shards(source: Iterable[Mapping[str, Any]], shard_size: int,
                skip: set[int]) -> Iterator[tuple[int, int, list]]:  # fmt: skip
    """(shard index, first row position, rows) for every shard not in `skip`.

    Datasets and sequences are sliced, so skipped shards cost nothing; other iterables are consumed
    row by row (skipped rows are not decoded by us, but the iterable still produces them).
    """
    if shard_size < 1:
        raise InputError(f"shard_size must be at least 1, got {shard_size}")
    if hasattr(source, "iloc") and hasattr(source, "to_dict"):  # pandas.DataFrame
        n = len(source)
        for i, start in enumerate(range(0, n, shard_size)):
            if i not in skip:
                yield i, start, source.iloc[start : start + shard_size].to_dict("records")
        return
    if hasattr(source, "select") and hasattr(source, "__len__"):  # datasets.Dataset
        n = len(source)
        for i, start in enumerate(range(0, n, shard_size)):
            if i not in skip:
                yield i, start, list(source.select(range(start, min(start + shard_size, n))))
        return
    if hasattr(source, "__getitem__") and hasattr(source, "__len__") and not isinstance(source, Mapping):
        n = len(source)
        for i, start in enumerate(range(0, n, shard_size)):
            if i not in skip:
                yield i, start, list(source[start : start + shard_size])
        return
    it = iter(source)
    i = 0
    while True:
        chunk = list(islice(it, shard_size))
        if not chunk:
            return
        if i not in skip:
            yield i, i * shard_size, chunk
        i += 1


def load_image(value: Any, where: str):
    """An RGB PIL image from a PIL image, a path, or a `datasets` image dict."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, Image.Image):
        return value if value.mode == "RGB" else value.convert("RGB")
    try:
        if isinstance(value, (str, os.PathLike)):
            with Image.open(value) as img:
                return img.convert("RGB")
        if isinstance(value, Mapping) and (value.get("bytes") or value.get("path")):
            src = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
            with Image.open(src) as img:
                return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"{where}: cannot read image ({e})") from e
    raise InputError(f"{where}: no image (expected a PIL image, a path, or an 'image'/'path' column)")


def split_row(row: Mapping[str, Any], position: int) -> tuple[Any, dict[str, Any]]:
    """(image value, metadata record) of one input row; the image is decoded later by the caller."""
    where = f"row {position}"
    if not isinstance(row, Mapping):
        raise InputError(f"{where}: expected a mapping with 'image' and 'caption', got {type(row).__name__}")
    caption = row.get("caption")
    if not isinstance(caption, str):
        raise InputError(f"{where}: caption must be a string, got {type(caption).__name__}")
    image = row.get("image")
    path = row.get("path")
    if image is None and path is None:
        raise InputError(f"{where}: no 'image' or 'path'")
    if path is None:
        if isinstance(image, (str, os.PathLike)):
            path = str(image)
        elif isinstance(image, Mapping) and image.get("path"):
            path = str(image["path"])
    cluster = row.get("cluster", -1)
    record = {
        "id": str(row["id"]) if row.get("id") is not None else str(position),
        "source_row": position,
        "url": str(row.get("url") or ""),
        "caption": caption,
        "cluster": int(cluster) if cluster is not None else -1,
        "path": str(path) if path is not None else None,
    }
    for key, value in row.items():
        if key not in RESERVED and key != "image" and isinstance(value, _SCALARS):
            record[key] = value
    return (image if image is not None else path), record
