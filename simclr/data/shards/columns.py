"""The split index (``<split>/split_index.bin``): every sample's key, label and location in one memory-mapped file.

Opening a split reads this one file, not one index per shard: at ImageNet's 1,281 shards the per-shard text
indexes took 13 s per rank to parse, and every rank and restart of a 1,024-rank job read 1,281 small files at once.
The columns are numpy arrays over one read-only ``mmap``, so every rank and DataLoader worker of a node shares
their pages, and no per-sample Python object exists to be copied by reference counting in forked workers.

Layout: 8 bytes magic ``SCLRIX01``, a little-endian uint64 header length, a JSON header (``num_samples``,
``num_shards``, ``shards_sha256`` — a digest of the manifest's shard entries, so that an index outliving its
shards is recognised as stale — and ``columns``: name -> [dtype, byte offset, length]), then each column
64-byte aligned:

- ``key_hash`` uint64 — :func:`simclr.data.shards.keys.key_hash` of the key (salt 0): the loader's sample order
  and key lookups, without hashing 1.28 M strings at start;
- ``key_end`` int64 and ``key_bytes`` uint8 — the UTF-8 keys back to back, key i ending at ``key_end[i]``;
- ``label``, ``shard``, ``offset``, ``size`` int64; ``height``, ``width`` int32; ``mode`` uint8 (0 = L, 1 = RGB);
- ``fault`` uint8 — 0, or :data:`FAULTS` index of a fault found when the index was built (a bad or duplicate
  key), which ``open_split`` drops within the bad-sample budget or names.

It is built from the per-shard ``.idx`` files (which stay, for tools and verification) whenever a split's
manifest is written, and by ``simclr-shards --reindex DATA_ROOT`` for data roots written before it existed.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from simclr.atomic import atomic_write
from simclr.data.errors import BadSampleError, ManifestError
from simclr.data.shards.index import ShardIndex, parse_index
from simclr.data.shards.keys import check_key, key_hashes
from simclr.data.shards.manifest import MANIFEST_NAME, Manifest

SPLIT_INDEX_NAME = "split_index.bin"
MAGIC = b"SCLRIX01"
_ALIGN = 64
MODES = ("L", "RGB")
FAULTS = ("", "bad key", "duplicate key")
_DTYPES = {"key_hash": "<u8", "key_end": "<i8", "key_bytes": "|u1", "label": "<i8", "shard": "<i8", "offset": "<i8",
           "size": "<i8", "height": "<i4", "width": "<i4", "mode": "|u1", "fault": "|u1"}


class SplitIndexError(ManifestError):
    """The split index is missing, damaged or stale; rebuilding it from the per-shard indexes is the remedy
    (:func:`reindex`, ``simclr-shards --reindex``)."""


def shards_digest(shards: Sequence[Any]) -> str:
    """sha256 over what of each manifest shard entry the index depends on (name, count, sizes, index sha256,
    path): a split index built for other shards is stale."""
    h = hashlib.sha256()
    for s in shards:
        h.update(f"{s.name}\t{s.count}\t{s.bytes}\t{s.index}\t{s.index_bytes}\t{s.index_sha256}\t{s.path}\n".encode())
    return h.hexdigest()


def reindex_hint(split_dir: Path) -> str:
    return f"run: simclr-shards --reindex {split_dir.parent}"


class KeyColumn(Sequence[str]):
    """The keys of a split (or of a selection of its rows) as a sequence of str, decoded on access from the
    memory-mapped bytes: no Python object per sample."""

    def __init__(self, data: npt.NDArray[np.uint8], ends: npt.NDArray[np.int64],
                 rows: npt.NDArray[np.int64] | None = None) -> None:
        self._data, self._ends, self._rows = data, ends, rows

    def __len__(self) -> int:
        return int(self._ends.shape[0] if self._rows is None else self._rows.shape[0])

    def _key(self, i: int) -> str:
        r = int(self._rows[i]) if self._rows is not None else i
        start = int(self._ends[r - 1]) if r > 0 else 0
        return bytes(self._data[start : int(self._ends[r])]).decode("utf-8")

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self._key(j) for j in range(len(self))[i]]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"key index {i} out of range for {n} keys")
        return self._key(i % n)

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self._key(i)

    def select(self, rows: npt.NDArray[np.int64]) -> KeyColumn:
        """The keys at ``rows`` (indices into this sequence)."""
        rows = np.asarray(rows, dtype=np.int64)
        return KeyColumn(self._data, self._ends, rows if self._rows is None else self._rows[rows])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (KeyColumn, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"KeyColumn({len(self)} keys: {self[:3]}...)"


@dataclass(frozen=True)
class SplitIndex:
    """The columns of one split index, as read-only numpy views of its memory map (all of length N)."""

    path: Path
    num_shards: int
    shards_sha256: str
    keys: KeyColumn
    key_hash: npt.NDArray[np.uint64]
    label: npt.NDArray[np.int64]
    shard: npt.NDArray[np.int64]
    offset: npt.NDArray[np.int64]
    size: npt.NDArray[np.int64]
    height: npt.NDArray[np.int32]
    width: npt.NDArray[np.int32]
    mode: npt.NDArray[np.uint8]
    fault: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        return int(self.label.shape[0])


def build_split_index(split_dir: str | Path, shards: Sequence[Any],
                      parts: Sequence[ShardIndex] | None = None) -> tuple[int, str]:
    """Write ``<split_dir>/split_index.bin`` from the per-shard indexes of the manifest entries ``shards``
    (``parts``: those indexes, already read and checked by the caller; else each is read and checked against
    its manifest size and sha256), atomically; return its (byte size, sha256). Bad or duplicate keys are
    flagged, not refused (the reader decides, with its bad-sample budget)."""
    split_dir = Path(split_dir)
    if parts is None:
        parts = [_checked_index(split_dir, s) for s in shards]
    keys = [k for p in parts for k in p.keys]
    fault = np.zeros(len(keys), dtype=np.uint8)
    seen: set[str] = set()
    for i, k in enumerate(keys):
        try:
            check_key(k)
        except BadSampleError:
            fault[i] = FAULTS.index("bad key")
            continue
        if k in seen:
            fault[i] = FAULTS.index("duplicate key")
        seen.add(k)
    encoded = [k.encode("utf-8") for k in keys]
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))

    def cat(name: str) -> npt.NDArray[Any]:
        return np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0, np.int64)

    columns: dict[str, npt.NDArray[Any]] = {
        "key_hash": key_hashes(keys),
        "key_end": np.cumsum(lengths),
        "key_bytes": np.frombuffer(b"".join(encoded), dtype=np.uint8),
        "label": cat("labels"),
        "shard": np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)]),
        "offset": cat("offsets"),
        "size": cat("sizes"),
        "height": cat("heights"),
        "width": cat("widths"),
        "mode": np.array([MODES.index(m) if m in MODES else 1 for p in parts for m in p.modes], dtype=np.uint8),
        "fault": fault,
    }
    header: dict[str, Any] = {"num_samples": len(keys), "num_shards": len(shards),
                              "shards_sha256": shards_digest(shards), "columns": {}}
    pos = 0
    for name, col in columns.items():
        arr = np.ascontiguousarray(col, dtype=_DTYPES[name])
        columns[name] = arr
        header["columns"][name] = [_DTYPES[name], pos, int(arr.shape[0])]  # from the first column's start
        pos += -(-arr.nbytes // _ALIGN) * _ALIGN
    text = json.dumps(header, sort_keys=True).encode()
    start = -(-(16 + len(text)) // _ALIGN) * _ALIGN
    h = hashlib.sha256()
    total = 0

    def write(f: Any) -> None:
        nonlocal total
        head = MAGIC + struct.pack("<Q", len(text)) + text
        head += b"\0" * (start - len(head))
        chunks = [head]
        for name, col in columns.items():
            data = col.tobytes()
            chunks.append(data + b"\0" * (-len(data) % _ALIGN))
        for c in chunks:
            f.write(c)
            h.update(c)
            total += len(c)

    atomic_write(split_dir / SPLIT_INDEX_NAME, write)
    return total, h.hexdigest()


def _checked_index(split_dir: Path, info: Any) -> ShardIndex:
    path = split_dir / info.index
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ManifestError(f"missing or unreadable shard index: {e}", path=path) from None
    if len(data) != info.index_bytes or hashlib.sha256(data).hexdigest() != info.index_sha256:
        raise ManifestError("shard index size/sha256 disagrees with the manifest", path=path)
    return parse_index(data, path)


def read_split_index(split_dir: str | Path, shards: Sequence[Any], expected_bytes: int | None) -> SplitIndex:
    """Map ``<split_dir>/split_index.bin`` and check it against the manifest's shard entries (stale: built for
    other shards) and its recorded size; :class:`ManifestError` names the file and what to run."""
    split_dir = Path(split_dir)
    path = split_dir / SPLIT_INDEX_NAME
    hint = reindex_hint(split_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise SplitIndexError(f"no split index (a data root written before split indexes existed); {hint}",
                            path=path) from None
    try:
        size = os.fstat(fd).st_size
        if expected_bytes is not None and size != expected_bytes:
            raise SplitIndexError(f"split index has {size} bytes, the manifest says {expected_bytes}; {hint}", path=path)
        if size < 16:
            raise SplitIndexError(f"split index is truncated ({size} bytes); {hint}", path=path)
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    if mm[:8] != MAGIC:
        raise SplitIndexError(f"not a split index (magic {bytes(mm[:8])!r}); {hint}", path=path)
    (hlen,) = struct.unpack("<Q", mm[8:16])
    try:
        header = json.loads(bytes(mm[16 : 16 + hlen]))
        start = -(-(16 + hlen) // _ALIGN) * _ALIGN
        cols: dict[str, npt.NDArray[Any]] = {}
        for name, (dtype, off, n) in header["columns"].items():
            end = start + int(off) + n * np.dtype(dtype).itemsize
            if end > size:
                raise ValueError(f"column {name} ends at byte {end} of {size}")
            cols[name] = np.frombuffer(mm, dtype=dtype, count=n, offset=start + int(off))
        n = int(header["num_samples"])
        if set(cols) != set(_DTYPES) or any(c.shape[0] != n for k, c in cols.items() if k not in ("key_bytes",)):
            raise ValueError("columns missing or of another length")
    except (ValueError, KeyError, TypeError) as e:
        raise SplitIndexError(f"unreadable split index: {e}; {hint}", path=path) from None
    if header["num_shards"] != len(shards) or header["shards_sha256"] != shards_digest(shards):
        raise SplitIndexError(f"stale split index: built for other shards than the manifest lists (shards rewritten "
                            f"or edited since); {hint}", path=path)
    return SplitIndex(
        path=path, num_shards=int(header["num_shards"]), shards_sha256=str(header["shards_sha256"]),
        keys=KeyColumn(cols["key_bytes"], cols["key_end"]), key_hash=cols["key_hash"], label=cols["label"],
        shard=cols["shard"], offset=cols["offset"], size=cols["size"], height=cols["height"], width=cols["width"],
        mode=cols["mode"], fault=cols["fault"],
    )


def reindex(data_root: str | Path, splits: Sequence[str] | None = None) -> dict[str, Manifest]:
    """Build the split index of every split of ``data_root`` that has a manifest (or of ``splits``) from its
    per-shard indexes (each checked against the manifest), and record it in the manifest. For data roots
    written before split indexes existed: nothing is re-sharded."""
    root = Path(data_root)
    names = list(splits) if splits is not None else sorted(
        p.name for p in root.iterdir() if (p / MANIFEST_NAME).is_file()) if root.is_dir() else []
    if not names:
        raise ManifestError("no split with a manifest.json under the data root", path=root)
    out: dict[str, Manifest] = {}
    for name in names:
        m = Manifest.load(root / name)
        nbytes, sha = build_split_index(root / name, m.shards)
        m.split_index = {"name": SPLIT_INDEX_NAME, "bytes": nbytes, "sha256": sha}
        m.save(root / name)
        out[name] = m
    return out
