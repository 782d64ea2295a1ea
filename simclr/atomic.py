"""Atomic file writes: write to a temporary file in the same folder, fsync, rename, fsync the folder.

Torch-free and neutral: the data layer, the training loop, ``jobs/`` and ``analysis/`` all write through it.

A reader (or a requeued job) therefore sees either the old complete file or the new complete file, never a
half-written one - the run-folder contract of docs/CONTRACTS.md depends on it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``; else set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the umask (0o644 under the usual 022)."""
    return 0o666 & ~current_umask()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path`` and atomically move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600: shards' manifests, key lists, configs, statuses and checkpoints
        # then could not be read by a labmate (fine-tuning from your pretraining run, running the report).
        try:
            os.fchmod(fd, new_file_mode())
        except OSError:  # a file system that refuses chmod (some network mounts): keep mkstemp's mode
            pass
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    def write(f: IO[bytes]) -> None:
        f.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")
