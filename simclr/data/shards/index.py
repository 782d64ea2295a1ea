"""The key index of one shard (``shard-NNNNNN.idx``): where each sample's image lies inside the tar.

One tab-separated line per sample, in tar order: ``key, label, offset, size, mode, width, height`` — the byte
offset and size of the image member's data, the label (-1 = none), the decoded mode (L/RGB) and pixel size.
With it the loader reads any sample with one ``pread`` / memory-map slice (random access in an order it owns,
and resuming mid-epoch without touching skipped samples), and label fractions are chosen without opening a tar.
The tar stays a plain WebDataset shard: tools that stream it ignore the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from simclr.data.errors import ManifestError

HEADER = "#key\tlabel\toffset\tsize\tmode\twidth\theight\n"


@dataclass(frozen=True)
class IndexEntry:
    key: str
    label: int
    offset: int
    size: int
    mode: str
    width: int
    height: int

    def line(self) -> str:
        return f"{self.key}\t{self.label}\t{self.offset}\t{self.size}\t{self.mode}\t{self.width}\t{self.height}\n"


@dataclass(frozen=True)
class ShardIndex:
    """Columns of one index file (all of length ``count``)."""

    keys: list[str]
    labels: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    sizes: npt.NDArray[np.int64]
    modes: list[str]
    heights: npt.NDArray[np.int64]
    widths: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.keys)


def format_index(entries: list[IndexEntry]) -> str:
    return HEADER + "".join(e.line() for e in entries)


def read_index(path: str | Path) -> ShardIndex:
    """Parse an index file; :class:`ManifestError` names the file and the line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ManifestError("missing shard index", path=path) from e
    except OSError as e:
        raise ManifestError(f"unreadable shard index: {e}", path=path) from e
    return parse_index(data, path)


def parse_index(data: bytes, path: str | Path) -> ShardIndex:
    """Parse the bytes of the index file ``path`` (named in errors)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"unreadable shard index: {e}", path=path) from e
    lines = text.split("\n")
    if not lines or lines[0] + "\n" != HEADER:
        raise ManifestError("shard index does not start with the expected header", path=path)
    if lines[-1] != "":
        raise ManifestError("shard index is truncated (no final newline)", path=path)
    body = lines[1:-1]
    keys: list[str] = []
    modes: list[str] = []
    nums = np.empty((len(body), 5), dtype=np.int64)
    for i, line in enumerate(body):
        parts = line.split("\t")
        try:
            if len(parts) != 7:
                raise ValueError(f"{len(parts)} fields")
            keys.append(parts[0])
            modes.append(parts[4])
            nums[i] = (int(parts[1]), int(parts[2]), int(parts[3]), int(parts[6]), int(parts[5]))
        except ValueError as e:
            raise ManifestError(f"malformed line {i + 2}: {e}", path=path, key=parts[0] if parts else None) from e
    return ShardIndex(
        keys=keys,
        labels=nums[:, 0].copy(),
        offsets=nums[:, 1].copy(),
        sizes=nums[:, 2].copy(),
        modes=modes,
        heights=nums[:, 3].copy(),
        widths=nums[:, 4].copy(),
    )
