"""Crash-safe file writes (temp file in the same directory + fsync + os.replace) and checksums."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from suti.errors import InputError

CHUNK = 1 << 20


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a temporary file beside `path`, then rename it to `path`.

    A reader sees either the old file or the complete new one, never a partial file; on any failure
    the temporary file is removed and the old file (if any) is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise InputError(f"cannot write to {path.parent}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Pretty, key-sorted JSON written atomically."""
    blob = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    return atomic_write(path, lambda f: f.write(blob))


def write_npy(path: str | os.PathLike, array) -> Path:
    """A `.npy` file written atomically (no pickles)."""
    import numpy as np

    return atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def write_parquet(path: str | os.PathLike, frame) -> Path:
    """A pandas DataFrame as parquet (pyarrow, index dropped), written atomically."""
    return atomic_write(path, lambda f: frame.to_parquet(f, index=False, engine="pyarrow"))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()
