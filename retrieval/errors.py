"""Typed errors of the retrieval package (all are `suti.errors` classes, so the CLI prints one line)."""

from __future__ import annotations

from suti.errors import ModelLoadError


class IndexLoadError(ModelLoadError):
    """An index directory cannot be used: missing files or unreadable `index_infos.json`."""


class IndexCorruptError(IndexLoadError):
    """The index file's bytes are not what `index_infos.json` promises (truncated, corrupt, replaced)."""


class IndexMismatchError(IndexLoadError):
    """The index is intact but does not match what it is used with (dimension, count, metric, metadata)."""
