"""Errors of the data layer. Each names the file (shard, manifest, key list) and, where there is one, the sample.

They subclass ``ValueError`` (the house rule for bad input), so callers that validate at the edge can catch
one type; the attributes let the training loop log the shard and key of a skipped sample.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad data: ``path`` is the file at fault, ``key`` the sample key when one sample is at fault."""

    def __init__(self, message: str, *, path: str | Path | None = None, key: str | None = None) -> None:
        where = []
        if path is not None:
            where.append(f"shard/file {path}")
        if key is not None:
            where.append(f"sample key {key!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.reason = message
        self.path = None if path is None else str(path)
        self.key = key


class ManifestError(DataError):
    """A manifest (or a shard's index) is missing, malformed, or disagrees with the shard files."""


class BadSampleError(DataError):
    """One sample cannot be used: undecodable image, bad label, duplicate key."""
