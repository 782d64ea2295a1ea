"""An opened, checked split: its manifest, every sample's key / label / location, and random-access reads.

``open_split`` checks the split against its manifest before anything trains (DESIGN principle 6): every shard
and index present, sizes right, index sha256 right, counts right, shard sha256 right (``verify="sha256"``),
keys valid and unique, labels inside the class list, every sample's bytes inside its tar (a split indexed in
place records no shard sha256: its tars are the user's, checked by size). A failed check raises
:class:`DataError` naming the shard and, where one sample is at fault, its key — or, with a bad-sample budget,
drops those samples and reports them (``ShardSet.dropped``) so the loader can count and log them.

The samples' keys, labels and locations come from the split index (:mod:`simclr.data.shards.columns`), one
memory-mapped file, checked against the manifest with numpy; each shard and index costs one ``stat`` (and a hash
with ``verify="sha256"``), so a split of 1,281 shards opens in well under a second.

Reads are one ``os.pread`` per sample on a file descriptor opened lazily in each process (DataLoader workers
included), so nothing big is loaded up front, the page cache shares shard bytes between ranks and workers of a
node, and a tar that shrinks under us gives a short read (an error naming the key), never a crash or a hang.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from simclr.data.errors import BadSampleError, DataError, ManifestError
from simclr.data.shards.columns import FAULTS, KeyColumn, SplitIndexError, read_split_index, reindex_hint
from simclr.data.shards.keys import check_key, key_hashes
from simclr.data.shards.manifest import Manifest, file_sha256

log = logging.getLogger("simclr.data")

Verify = Literal["sha256", "size", "auto"]
#: ``verify="auto"`` hashes every shard when the split is at most this big (Fashion-MNIST: ~0.1 s), else sizes.
AUTO_SHA256_MAX_BYTES = 2 << 30


@dataclass(frozen=True)
class Dropped:
    """A sample left out at open time (with a bad-sample budget): where and why."""

    shard: str
    key: str
    reason: str


@dataclass
class ShardSet:
    """Samples ``0..N-1`` of one split, in shard order. Columns are numpy arrays of length N (views of the
    memory-mapped split index where nothing was dropped or selected) and ``keys`` a :class:`KeyColumn`: no
    Python object per sample, so forked DataLoader workers share all of it. ``key_ids``: the keys' stable
    hashes (:func:`simclr.data.shards.keys.key_hash`, salt 0)."""

    split_dir: Path
    manifest: Manifest
    keys: KeyColumn
    labels: npt.NDArray[np.int64]
    shard_ids: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    sizes: npt.NDArray[np.int64]
    key_ids: npt.NDArray[np.uint64]
    dropped: list[Dropped] = field(default_factory=list)
    _fds: dict[int, int] = field(default_factory=dict, repr=False)
    _pid: int = field(default=-1, repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    def shard_path(self, i: int) -> Path:
        """Path of the shard holding sample ``i``."""
        return self.manifest.shards[int(self.shard_ids[i])].tar_path(self.split_dir)

    def read(self, i: int) -> bytes:
        """The encoded image bytes of sample ``i``; :class:`BadSampleError` (shard + key) on a short read."""
        if self._pid != os.getpid():  # a forked worker: open our own descriptors
            self._fds = {}
            self._pid = os.getpid()
        sid = int(self.shard_ids[i])
        fd = self._fds.get(sid)
        path = self.manifest.shards[sid].tar_path(self.split_dir)
        try:
            if fd is None:
                fd = self._fds[sid] = os.open(path, os.O_RDONLY)
            size = int(self.sizes[i])
            data = os.pread(fd, size, int(self.offsets[i]))
        except OSError as e:
            raise BadSampleError(f"cannot read the sample: {e}", path=path, key=self.keys[i]) from e
        if len(data) != size:
            raise BadSampleError(f"short read ({len(data)} of {size} bytes): shard truncated?", path=path, key=self.keys[i])
        return data

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"] = {}
        state["_pid"] = -1
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def select(self, rows: npt.NDArray[np.int64]) -> ShardSet:
        """A ShardSet of the given sample rows (e.g. a label fraction), sharing the manifest."""
        rows = np.asarray(rows, dtype=np.int64)
        return ShardSet(
            split_dir=self.split_dir,
            manifest=self.manifest,
            keys=self.keys.select(rows),
            labels=self.labels[rows],
            shard_ids=self.shard_ids[rows],
            offsets=self.offsets[rows],
            sizes=self.sizes[rows],
            key_ids=self.key_ids[rows],
            dropped=list(self.dropped),
        )

    def rows_of(self, keys: Sequence[str]) -> tuple[npt.NDArray[np.int64], list[str]]:
        """``(rows, missing)``: the sorted rows holding ``keys`` (found by hash, confirmed by the key itself),
        and the keys not here, in their order."""
        want = key_hashes(keys)
        order = np.argsort(self.key_ids, kind="stable")
        have = self.key_ids[order]
        pos = np.minimum(np.searchsorted(have, want), max(0, len(have) - 1))
        rows = order[pos] if len(have) else np.zeros(len(want), np.int64)
        ok = np.array([len(have) > 0 and have[p] == h and self.keys[int(r)] == k
                       for p, h, r, k in zip(pos, want, rows, keys)], dtype=bool)
        return np.unique(rows[ok]).astype(np.int64), [k for k, o in zip(keys, ok) if not o]


def _file_size(path: Path) -> int | None:
    """The size of a regular file, None when there is none (one ``stat``: 1,281 shards are 1,281 calls)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _size_problem(size: int, expected: int) -> str:
    if size == 0:
        return "empty shard file"
    if size < expected:
        return f"truncated shard: {size} of {expected} bytes"
    return f"shard has {size} bytes, manifest says {expected}"


def check_present(data_root: str | Path, split: str, *, bad_sample_budget: int = 0) -> Manifest:
    """The cheap part of :func:`open_split`'s check, for the login node before anything is queued: the manifest
    and the split index load and agree, and every shard and index is there with the size the manifest records
    (a ``stat`` each, no read). With a bad-sample budget, missing and truncated shards pass while the samples
    they lose fit in it, as ``open_split`` would drop them."""
    split_dir = Path(data_root) / split
    manifest = Manifest.load(split_dir)
    si = read_split_index(split_dir, manifest.shards, manifest.split_index["bytes"] if manifest.split_index else None)
    lost = 0
    ends: npt.NDArray[np.int64] | None = None
    for sid, info in enumerate(manifest.shards):
        idx_path, tar_path = split_dir / info.index, info.tar_path(split_dir)
        idx_size = _file_size(idx_path)
        if idx_size is None:
            raise ManifestError("missing shard index", path=idx_path, key=info.first_key)
        if idx_size != info.index_bytes:
            raise ManifestError("shard index size/sha256 disagrees with the manifest", path=idx_path)
        size = _file_size(tar_path)
        if size is None:
            lost += info.count
            if lost > bad_sample_budget:
                raise DataError(f"missing shard ({info.count} samples)", path=tar_path, key=info.first_key)
        elif size != info.bytes:
            if size > info.bytes or bad_sample_budget == 0:
                raise DataError(_size_problem(size, info.bytes), path=tar_path)
            if ends is None:
                ends = si.offset + si.size
            gone = int(((si.shard == sid) & (ends > size)).sum())
            lost += gone
            if gone == 0 or lost > bad_sample_budget:
                raise DataError(_size_problem(size, info.bytes), path=tar_path)
    return manifest


def open_split(
    data_root: str | Path,
    split: str,
    *,
    verify: Verify = "auto",
    bad_sample_budget: int = 0,
) -> ShardSet:
    """Open ``<data_root>/<split>`` and check it against its manifest (see the module docstring).

    Args:
        verify: "sha256" hashes every shard, "size" checks sizes only, "auto" hashes splits up to 2 GiB.
        bad_sample_budget: how many samples may be dropped for structural faults (missing or truncated shard,
            bad key, duplicate key, label outside the class list) before that is an error. sha256 mismatches
            and manifest/index disagreements are always errors: they say nothing about which sample is bad.
    """
    if verify not in ("sha256", "size", "auto"):
        raise ValueError(f"verify must be 'sha256', 'size' or 'auto', got {verify!r}")
    if bad_sample_budget < 0:
        raise ValueError(f"bad_sample_budget must be >= 0, got {bad_sample_budget}")
    split_dir = Path(data_root) / split
    manifest = Manifest.load(split_dir)
    if verify == "auto":
        verify = "sha256" if sum(s.bytes for s in manifest.shards) <= AUTO_SHA256_MAX_BYTES else "size"
    num_classes = manifest.num_classes
    dropped: list[Dropped] = []

    def drop_or_raise(err: DataError, shard: str, keys: list[str], reason: str) -> None:
        if len(dropped) + len(keys) > bad_sample_budget:
            raise err
        dropped.extend(Dropped(shard, k, reason) for k in keys)

    # One stat per shard index; its bytes are read only to hash them (the split index holds their content).
    for info in manifest.shards:
        idx_path = split_dir / info.index
        idx_size = _file_size(idx_path)
        if idx_size is None:
            raise ManifestError("missing shard index", path=idx_path, key=info.first_key)
        if idx_size != info.index_bytes or (
                verify == "sha256" and file_sha256(idx_path) != info.index_sha256):
            raise ManifestError("shard index size/sha256 disagrees with the manifest", path=idx_path)
    recorded = manifest.split_index
    si = read_split_index(split_dir, manifest.shards, recorded["bytes"] if recorded else None)
    if verify == "sha256" and recorded and file_sha256(si.path) != recorded["sha256"]:
        raise SplitIndexError(f"split index sha256 disagrees with the manifest; {reindex_hint(split_dir)}",
                              path=si.path)
    n_shards = len(manifest.shards)
    counts = np.bincount(si.shard, minlength=n_shards) if len(si) else np.zeros(n_shards, np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    for sid, info in enumerate(manifest.shards):
        idx_path = split_dir / info.index
        if counts[sid] != info.count:
            raise ManifestError(f"index lists {counts[sid]} samples, manifest says {info.count}", path=idx_path)
        if si.keys[int(starts[sid])] != info.first_key:
            raise ManifestError(f"index starts with {si.keys[int(starts[sid])]!r}, manifest says {info.first_key!r}",
                                path=idx_path)
    ends = si.offset + si.size
    shard_bytes = np.array([info.bytes for info in manifest.shards], dtype=np.int64)
    outside = (ends > shard_bytes[si.shard]) | (si.offset < 0)
    if outside.any():
        r = int(np.argmax(outside))
        raise ManifestError("index points outside the shard", path=split_dir / manifest.shards[int(si.shard[r])].index,
                            key=si.keys[r])
    keep = np.ones(len(si), dtype=bool)

    def rows_of_shard(sid: int) -> range:
        return range(int(starts[sid]), int(starts[sid] + counts[sid]))

    for sid, info in enumerate(manifest.shards):
        tar_path = info.tar_path(split_dir)
        rows = rows_of_shard(sid)
        size = _file_size(tar_path)
        if size is None:
            err = DataError(f"missing shard ({info.count} samples)", path=tar_path, key=info.first_key)
            drop_or_raise(err, info.name, [si.keys[r] for r in rows], "missing shard")
            keep[rows.start : rows.stop] = False
            continue
        if size != info.bytes:
            msg = _size_problem(size, info.bytes)
            lost = ends[rows.start : rows.stop] > size
            if size > info.bytes or not lost.any():
                raise DataError(msg, path=tar_path)
            first_lost = si.keys[rows.start + int(np.argmax(lost))]
            drop_or_raise(DataError(msg + "; first sample lost", path=tar_path, key=first_lost), info.name,
                          [si.keys[rows.start + int(j)] for j in np.nonzero(lost)[0]], "truncated shard")
            keep[rows.start : rows.stop] &= ~lost
        elif verify == "sha256" and info.sha256 and file_sha256(tar_path) != info.sha256:  # (in place: none)
            raise DataError("shard sha256 disagrees with the manifest (corrupt or rewritten shard)", path=tar_path)
    # Faults found when the index was built, and labels outside the class list: few rows, named one by one.
    bad_label = (si.label < -1) | (si.label >= num_classes)
    for r in map(int, np.nonzero(keep & ((si.fault > 0) | bad_label))[0]):
        info = manifest.shards[int(si.shard[r])]
        tar_path, key = info.tar_path(split_dir), si.keys[r]
        if si.fault[r]:
            reason = FAULTS[int(si.fault[r])]
            if reason == "bad key":
                try:
                    check_key(key)
                    msg = reason
                except BadSampleError as e:
                    msg = e.reason
            else:
                first = int(np.nonzero((si.key_hash == si.key_hash[r]) & (si.fault == 0))[0][0])
                msg = f"duplicate key (also in {manifest.shards[int(si.shard[first])].name})"
        else:
            reason, msg = "bad label", f"label {int(si.label[r])} outside the {num_classes} classes"
        drop_or_raise(BadSampleError(msg, path=tar_path, key=key), info.name, [key], reason)
        keep[r] = False
    for d in dropped:
        log.warning("bad sample dropped (%s): shard %s, key %r", d.reason, d.shard, d.key)
    out = ShardSet(split_dir, manifest, si.keys, si.label, si.shard, si.offset, si.size, si.key_hash, dropped)
    return out if keep.all() else out.select(np.nonzero(keep)[0])
