"""The manifest of one split: ``<data_root>/<split>/manifest.json``.

Written last (atomically) by the shard writer, so a split without a manifest is unfinished. It lists every shard
with its sample count, byte size and sha256 (and the same for the shard's key index), the class names, the
source, and the image format / mode / size, so a reader can check the files before any job is queued.

Layout of a split folder::

    <data_root>/<split>/shard-000000.tar      WebDataset tar: <key>.png|jpg (image), <key>.cls (label, ASCII int)
    <data_root>/<split>/shard-000000.idx      one line per sample: key, label, byte offset and size of the image
    <data_root>/<split>/manifest.json         this file
    <data_root>/train/fractions/1percent.txt  label-fraction key lists (simclr.data.shards.fractions)

A split indexed in place (:mod:`simclr.data.shards.inplace`) has the same files but the tars: each shard entry
then names the user's tar by its absolute ``path`` (``name`` stays the logical ``shard-NNNNNN.tar``), and its
``sha256`` is empty, since indexing reads tar headers only (such shards are checked by size).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simclr.data.errors import ManifestError
from simclr.atomic import atomic_write_text

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_RE = re.compile(r"^shard-(\d{6})\.tar$")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, as the manifest records it for shards and indexes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def index_name(index: int) -> str:
    return f"shard-{index:06d}.idx"


@dataclass(frozen=True)
class ShardInfo:
    """One shard: file name, samples, bytes, sha256 of the tar; the same for its index; its first key; and,
    for a tar indexed in place, its absolute path (None: ``<split_dir>/<name>``)."""

    name: str
    count: int
    bytes: int
    sha256: str
    index: str
    index_bytes: int
    index_sha256: str
    first_key: str
    path: str | None = None

    def tar_path(self, split_dir: str | Path) -> Path:
        """Where the tar is: the user's own file for a split indexed in place, else in the split folder."""
        return Path(self.path) if self.path is not None else Path(split_dir) / self.name


@dataclass
class Manifest:
    """Everything a reader needs to check and read one split."""

    split: str
    num_samples: int
    class_names: list[str]
    source: dict[str, Any]
    image_format: str
    image_mode: str  # decode mode: "L" when every image is gray, else "RGB"
    image_size: list[int] | None  # [H, W] when all images share it, else None
    image_size_range: list[list[int]]  # [[min H, min W], [max H, max W]]
    label_counts: list[int]  # samples per class; unlabelled samples are in num_unlabelled
    num_unlabelled: int
    shards: list[ShardInfo]
    writer: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # the split index (simclr.data.shards.columns): {"name", "bytes", "sha256"}; None in roots written before it
    split_index: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        raw = asdict(self)
        if raw["split_index"] is None:
            del raw["split_index"]
        for s in raw["shards"]:  # our own shards' manifests stay byte-identical to those written before paths
            if s["path"] is None:
                del s["path"]
        return json.dumps(raw, indent=1, sort_keys=True) + "\n"

    def save(self, split_dir: str | Path) -> Path:
        """Write ``manifest.json`` atomically (identical content is written identically: byte-reproducible)."""
        path = Path(split_dir) / MANIFEST_NAME
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def load(cls, split_dir: str | Path) -> Manifest:
        """Read and check ``<split_dir>/manifest.json``; :class:`ManifestError` names the file and the field."""
        path = Path(split_dir) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError("no manifest: the split was never written or its writing did not finish", path=path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError(f"unreadable manifest: {e}", path=path) from e
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: Any, path: str | Path = MANIFEST_NAME) -> Manifest:
        if not isinstance(raw, dict):
            raise ManifestError("manifest must be a JSON object", path=path)
        if raw.get("format_version") != FORMAT_VERSION:
            raise ManifestError(f"format_version {raw.get('format_version')!r}, expected {FORMAT_VERSION}", path=path)
        names = {f for f in cls.__dataclass_fields__}
        missing = names - set(raw) - {"writer", "split_index"}
        unknown = set(raw) - names
        if missing or unknown:
            raise ManifestError(f"missing fields {sorted(missing)}, unknown fields {sorted(unknown)}", path=path)
        try:
            shards = [ShardInfo(**s) for s in raw["shards"]]
        except TypeError as e:
            raise ManifestError(f"bad shard entry: {e}", path=path) from e
        m = cls(**{**raw, "shards": shards})
        m.check(path)
        return m

    def check(self, path: str | Path = MANIFEST_NAME) -> None:
        """Internal consistency: counts add up, names are the expected sequence, no empty shard."""
        if self.num_samples != sum(s.count for s in self.shards):
            raise ManifestError(
                f"num_samples {self.num_samples} != sum of shard counts {sum(s.count for s in self.shards)}", path=path
            )
        if sum(self.label_counts) + self.num_unlabelled != self.num_samples:
            raise ManifestError("label_counts + num_unlabelled != num_samples", path=path)
        if len(self.label_counts) != len(self.class_names):
            raise ManifestError("label_counts must have one entry per class name", path=path)
        if len(set(self.class_names)) != len(self.class_names):
            raise ManifestError("class_names has duplicates", path=path)
        for i, s in enumerate(self.shards):
            if s.name != shard_name(i) or s.index != index_name(i):
                raise ManifestError(f"shard {i} is named {s.name!r}/{s.index!r}, expected {shard_name(i)!r}", path=path)
            if s.count <= 0:
                raise ManifestError(f"empty shard {s.name} (count {s.count})", path=path)
        if self.image_mode not in ("L", "RGB"):
            raise ManifestError(f"image_mode must be L or RGB, got {self.image_mode!r}", path=path)
