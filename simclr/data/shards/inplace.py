"""Index WebDataset tar shards where they are: key indexes and a manifest under a data root, no tar copied.

Researchers usually have ImageNet already as WebDataset shards (``webdataset.ShardWriter``, img2dataset, a
downloaded ``*-wds`` set). ``index_webdataset`` reads their tar headers (and the small label members), never the
image bytes unless asked to verify them, and writes ``<data_root>/<split>/shard-NNNNNN.idx`` plus
``manifest.json`` whose shard entries name the original tars by absolute path (:class:`ShardInfo.path`). Nothing
is written beside the tars, which may be read-only. The split then opens, loads, and takes label fractions like
one the suite wrote itself.

Samples follow WebDataset's own rule: consecutive members whose names share the prefix up to the first '.' of
the file name form one sample (``a.b/n0144_1.jpg`` and ``a.b/n0144_1.cls`` are sample ``a.b/n0144_1``); the
extension is lower-cased; ``__*__`` members and non-files are skipped. The image is the first member among
``jpg, jpeg, png, webp, ppm`` (or ``image_key``). The label is the integer text of ``cls``, or the field
``label_field`` of the ``json`` member; a class-name label (``"n01440764"``) goes through the class map. A sample
without a label is unlabelled (-1).

Faults — a truncated or corrupt tar, a sample without an image, a duplicate key, a label outside the classes — are
errors naming the tar, the key and the byte offset, and nothing is written; with ``skip_bad`` they are skipped,
counted in the manifest's source entry and listed in ``<split>/skipped.tsv``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from simclr.atomic import atomic_write_text
from simclr.data.errors import BadSampleError, DataError
from simclr.data.shards.codec import decode_pil, probe, sniff_format
from simclr.data.shards.index import IndexEntry, format_index
from simclr.data.shards.keys import check_key
from simclr.data.shards.manifest import Manifest, ShardInfo, index_name, shard_name
from simclr.data.shards.progress import Progress
from simclr.data.shards.write import clear_split, write_manifest

log = logging.getLogger("simclr.data")

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "ppm")
SKIPPED_NAME = "skipped.tsv"
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta
_PROBE_BYTES = (2048, 65536)  # header reads tried before the whole image (an EXIF block may come first)
_BLOCK = tarfile.BLOCKSIZE


def base_plus_ext(name: str) -> tuple[str, str] | None:
    """WebDataset's split of a member name into (sample key, extension); None for a name without one."""
    m = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return (m.group(1), m.group(2)) if m else None


def expand_inputs(spec: str | Path) -> list[Path]:
    """The tars of ``--input``: a brace pattern (``train-{000000..001281}.tar``), a folder (its ``*.tar``,
    sorted) or a list file (one tar a line, relative to the list's folder). Every tar must exist."""
    text = str(spec)
    path = Path(text)
    if "{" in text:
        from braceexpand import braceexpand

        tars = [Path(p) for p in braceexpand(text)]
    elif path.is_dir():
        tars = sorted(p for p in path.iterdir() if p.name.endswith(".tar") and not p.name.startswith("."))
        if not tars:
            raise DataError("no *.tar files in the input folder", path=path)
    elif path.is_file() and not text.endswith(".tar"):
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        tars = [p if p.is_absolute() else path.parent / p for p in (Path(ln) for ln in lines if ln and ln[0] != "#")]
        if not tars:
            raise DataError("the list file names no tar", path=path)
    else:
        tars = [path]
    missing = [p for p in tars if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(tars)} input tars do not exist, e.g. {[str(p) for p in missing[:3]]}",
                        path=missing[0])
    if len(set(p.resolve() for p in tars)) != len(tars):
        raise DataError("the input names a tar twice", path=text)
    return [p.resolve() for p in tars]


def read_class_map(path: str | Path) -> list[str]:
    """Class names by index from a class map file: one name a line (its index is its line), or ``name index``
    pairs covering ``0..C-1`` (like ImageNet's ``synset`` lists)."""
    path = Path(path)
    try:
        rows = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise DataError(f"cannot read the class map: {e}", path=path) from e
    if not rows:
        raise DataError("the class map is empty", path=path)
    if all(len(r) == 1 for r in rows):
        names = [r[0] for r in rows]
    else:
        try:
            pairs = {int(r[1]): r[0] for r in rows if len(r) == 2}
        except ValueError as e:
            raise DataError(f"class map lines must be 'name' or 'name index': {e}", path=path) from e
        if len(pairs) != len(rows) or sorted(pairs) != list(range(len(rows))):
            raise DataError("class map lines must be 'name index' with the indices 0..C-1, each once", path=path)
        names = [pairs[i] for i in range(len(rows))]
    if len(set(names)) != len(names):
        raise DataError("the class map names a class twice", path=path)
    return names


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data
    size: int


@dataclass(frozen=True)
class Skipped:
    """A sample (or the rest of a tar) left out with ``skip_bad``: where and why."""

    tar: str
    key: str
    offset: int
    reason: str


def scan_tar(path: Path) -> tuple[list[Member], str | None, int]:
    """The regular members of one tar, by reading its headers only; plus, when the tar is damaged, the fault
    and the byte offset where it starts (members before it are whole). GNU, ustar and pax headers."""
    size = path.stat().st_size
    members: list[Member] = []
    with open(path, "rb", buffering=0) as f:  # unbuffered: a header read reads its 512 bytes, not 8 KiB
        try:
            tar = tarfile.open(fileobj=f, mode="r:")
        except tarfile.ReadError as e:
            return members, f"not a readable tar: {e}", 0
        while True:
            pos = tar.offset
            try:
                info = tar.next()
            except tarfile.ReadError as e:  # (a cut inside a pax/GNU header pair reads as an empty one)
                cut = any(m in str(e) for m in ("empty header", "truncated header", "unexpected end"))
                return members, f"{'truncated tar' if cut else 'corrupt tar header'}: {e}", pos
            if info is None:
                break
            if info.isreg():
                if info.offset_data + info.size > size:
                    return members, f"truncated tar: member {info.name!r} needs {info.offset_data + info.size} " \
                                    f"of {size} bytes", info.offset
                members.append(Member(info.name, info.offset_data, info.size))
        # tarfile stops quietly at a bad or cut header after the first: what ended the walk must be a zero block.
        f.seek(tar.offset)
        end = f.read(_BLOCK)
    if len(end) < _BLOCK:
        return members, "truncated tar: no end-of-archive block after the last member", tar.offset
    if end.count(0) != _BLOCK:
        return members, "corrupt tar header (bad checksum or garbage)", tar.offset
    return members, None, 0


@dataclass
class _Label:
    """How a sample's label is read: ``cls`` text or a ``json`` field, then the class map for names."""

    json_field: str | None
    class_names: list[str] | None
    by_name: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_name = {n: i for i, n in enumerate(self.class_names or [])}

    def parse(self, raw: bytes, ext: str) -> int:
        """The label in a ``cls`` / ``json`` member; ValueError saying what is wrong."""
        if ext == "json":
            try:
                obj = json.loads(raw)
            except ValueError as e:
                raise ValueError(f"unreadable json member: {e}") from None
            if not isinstance(obj, dict) or self.json_field not in obj:
                raise ValueError(f"json member has no field {self.json_field!r}")
            value = obj[self.json_field]
        else:
            value = raw.decode("utf-8", "replace").strip()
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"label {value!r} is neither an integer nor a class name")
        if isinstance(value, str):
            if value.lstrip("-").isdigit():
                return int(value)
            if value not in self.by_name:
                hint = "not in the class map" if self.class_names else "a class name needs --class-map"
                raise ValueError(f"label {value!r}: {hint}")
            return self.by_name[value]
        return value


def _probe(f: Any, m: Member, verify: bool) -> tuple[str, int, int, str | None]:
    """(decode mode, width, height, format) of an image member from its header (the whole image with
    ``verify``)."""
    sizes = () if verify else tuple(n for n in _PROBE_BYTES if n < m.size)
    for n in (*sizes, m.size):
        f.seek(m.offset)
        data = f.read(n)
        try:
            mode, w, h, _ = probe(data)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            if n < m.size:
                continue
            raise
        if verify:
            decode_pil(data, mode)
        return mode, w, h, sniff_format(data)
    raise AssertionError("unreachable")


@dataclass
class _Shard:
    tar: Path
    entries: list[IndexEntry]
    bytes: int
    formats: set[str]


def _samples(members: list[Member]) -> Iterator[tuple[str, dict[str, Member]]]:
    """Consecutive members grouped into samples, as webdataset's ``group_by_keys``."""
    key: str | None = None
    group: dict[str, Member] = {}
    for m in members:
        if _META.match(m.name):
            continue
        split = base_plus_ext(m.name)
        if split is None:
            continue
        prefix, ext = split[0], split[1].lower()
        if prefix != key:
            if key is not None:
                yield key, group
            key, group = prefix, {}
        if ext in group:
            raise _Fault(f"duplicate member {m.name!r} in one sample", prefix, m.offset)
        group[ext] = m
    if key is not None:
        yield key, group


class _Fault(Exception):
    def __init__(self, reason: str, key: str, offset: int) -> None:
        super().__init__(reason)
        self.reason, self.key, self.offset = reason, key, offset


def _index_tar(tar: Path, image_key: str | None, label: _Label, verify: bool, skip: list[Skipped] | None,
               seen: dict[str, str]) -> _Shard:
    """Index entries of one tar (labels not yet checked against the class count)."""
    members, fault, fault_at = scan_tar(tar)
    groups = list(_samples_or_fault(members, tar, skip))
    if fault is not None:
        # The sample read last may have lost members past the fault: it is left out with the rest.
        key = groups.pop()[0] if groups else ""
        _bad(skip, tar, key, fault_at, fault + "; this sample and the rest of the tar are lost")
    entries: list[IndexEntry] = []
    formats: set[str] = set()
    with open(tar, "rb", buffering=0) as f:
        for key, group in groups:
            first = min(m.offset for m in group.values())
            try:
                check_key(key)
                if key in seen:
                    raise ValueError(f"duplicate key (also in {seen[key]})")
                img_ext = image_key if image_key is not None else next((k for k in IMAGE_KEYS if k in group), None)
                if img_ext is None or img_ext not in group:
                    raise ValueError(f"sample has no image member ({image_key or '/'.join(IMAGE_KEYS)}); it has "
                                     f"{sorted(group)}")
                lab_ext = "json" if label.json_field is not None else "cls"
                lab = -1
                if lab_ext in group:
                    f.seek(group[lab_ext].offset)
                    lab = label.parse(f.read(group[lab_ext].size), lab_ext)
                img = group[img_ext]
                try:
                    mode, w, h, fmt = _probe(f, img, verify)
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                    raise ValueError(f"unreadable image member {img_ext!r}: {e}") from None
            except (ValueError, BadSampleError) as e:
                _bad(skip, tar, key, first, e.reason if isinstance(e, BadSampleError) else str(e))
                continue
            formats.add(fmt or img_ext)
            seen[key] = tar.name
            entries.append(IndexEntry(key, lab, img.offset, img.size, mode, w, h))
    return _Shard(tar, entries, tar.stat().st_size, formats)


def _samples_or_fault(members: list[Member], tar: Path, skip: list[Skipped] | None
                      ) -> Iterator[tuple[str, dict[str, Member]]]:
    try:
        yield from _samples(members)
    except _Fault as e:
        _bad(skip, tar, e.key, e.offset, e.reason + "; the rest of the tar is left out")


def _bad(skip: list[Skipped] | None, tar: Path, key: str, offset: int, reason: str) -> None:
    if skip is None:
        raise BadSampleError(f"{reason} (byte offset {offset})", path=tar, key=key or None)
    skip.append(Skipped(str(tar), key, offset, reason))


def index_webdataset(
    tars: Sequence[Path],
    data_root: str | Path,
    *,
    split: str,
    image_key: str | None = None,
    label_field: str | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    verify_images: bool = False,
    skip_bad: bool = False,
    source: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> Manifest:
    """Index the WebDataset ``tars`` (in this order) as split ``split`` of ``data_root``; return the manifest.

    Args:
        image_key: the image member's extension; None = the first of :data:`IMAGE_KEYS` in each sample.
        label_field: read labels from this field of the ``json`` member (else from ``cls``).
        class_names: the classes by index (a class map: names in labels are looked up in it). Else
            ``num_classes`` classes named "0".."C-1", else as many as the largest label + 1.
        verify_images: decode every image fully (reads the image bytes; off: headers only).
        skip_bad: skip faulty samples (counted and listed) instead of failing.
    Raises :class:`BadSampleError` naming the tar, key and byte offset; nothing is written then.
    """
    if not split or "/" in split or split.startswith("."):
        raise ValueError(f"split must be a plain folder name, got {split!r}")
    if not tars:
        raise DataError("no input tars")
    if image_key is not None and image_key != image_key.lower():
        raise ValueError(f"image_key is matched lower-cased (as webdataset does): give {image_key.lower()!r}")
    split_dir = Path(data_root).resolve() / split
    beside = [t for t in tars if t.parent == split_dir]
    if beside:
        raise DataError("the data root's split folder is the folder of the input tars: the index must be written "
                        "elsewhere (--out another folder)", path=beside[0])
    label = _Label(label_field, list(class_names) if class_names is not None else None)
    skipped: list[Skipped] | None = [] if skip_bad else None
    seen: dict[str, str] = {}
    shards: list[_Shard] = []
    with Progress(len(tars), f"index {split}", enabled=progress if progress is not None else len(tars) > 50) as bar:
        for tar in tars:
            shard = _index_tar(tar, image_key, label, verify_images, skipped, seen)
            if shard.entries:
                shards.append(shard)
            bar.update(1)
    if not shards:
        raise DataError("no samples in the input tars", path=tars[0])
    top = max((e.label for s in shards for e in s.entries), default=-1)
    if class_names is None:
        n = num_classes if num_classes is not None else top + 1
        if num_classes is None and top >= 0:
            log.warning("%s: %d classes inferred from the largest label (give --num-classes or --class-map to "
                        "state them)", split, n)
        class_names = [str(i) for i in range(n)]
    classes = list(class_names)
    for s in shards:  # a label outside the classes: each named, or skipped
        bad = [e for e in s.entries if not -1 <= e.label < len(classes)]
        for e in bad:
            _bad(skipped, s.tar, e.key, e.offset, f"label {e.label} outside the {len(classes)} classes")
        if bad:
            s.entries = [e for e in s.entries if -1 <= e.label < len(classes)]
    shards = [s for s in shards if s.entries]
    formats = set().union(*(s.formats for s in shards))
    return _write(split_dir, split, shards, classes, formats, skipped, source or {"type": "webdataset"})


def _write(split_dir: Path, split: str, shards: list[_Shard], classes: list[str], formats: set[str],
           skipped: list[Skipped] | None, source: dict[str, Any]) -> Manifest:
    """The indexes, the skip list, then the manifest (last, atomically): a split without it is unfinished."""
    split_dir.mkdir(parents=True, exist_ok=True)
    clear_split(split_dir, None)
    (split_dir / SKIPPED_NAME).unlink(missing_ok=True)
    infos: list[ShardInfo] = []
    for i, s in enumerate(shards):
        text = format_index(s.entries)
        atomic_write_text(split_dir / index_name(i), text)
        data = text.encode("utf-8")
        infos.append(ShardInfo(name=shard_name(i), count=len(s.entries), bytes=s.bytes, sha256="",
                               index=index_name(i), index_bytes=len(data),
                               index_sha256=hashlib.sha256(data).hexdigest(), first_key=s.entries[0].key,
                               path=str(s.tar)))
    if skipped:
        atomic_write_text(split_dir / SKIPPED_NAME, "#tar\tkey\toffset\treason\n" + "".join(
            f"{k.tar}\t{k.key}\t{k.offset}\t{k.reason}\n" for k in skipped))
        log.warning("%s: %d bad samples skipped, listed in %s", split, len(skipped), split_dir / SKIPPED_NAME)
    source = {**source, "skipped": len(skipped or ())}
    fmt = formats.pop() if len(formats) == 1 else "mixed"
    return write_manifest(split_dir, split, infos, classes, source, fmt, {"indexed_in_place": True})


def listing_digest(tars: Sequence[Path]) -> str:
    """sha256 over each tar's path, size and modification time: identifies the input, for reuse."""
    h = hashlib.sha256()
    for t in tars:
        st = os.stat(t)
        h.update(f"{t}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


__all__ = ["IMAGE_KEYS", "SKIPPED_NAME", "base_plus_ext", "expand_inputs", "index_webdataset", "listing_digest",
           "read_class_map", "scan_tar"]
