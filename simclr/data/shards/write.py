"""Writing WebDataset tar shards, their key indexes and the split manifest — byte-reproducibly.

``write_shards(samples, data_root, split=...)`` writes ``<data_root>/<split>/shard-NNNNNN.tar`` (members
``<key>.png|jpg`` and ``<key>.cls``), one ``shard-NNNNNN.idx`` per shard (see :mod:`simclr.data.shards.index`)
and, last and atomically, ``manifest.json``. The same input gives the same bytes: tar headers carry no time,
owner or permissions of the writing process, images are encoded with fixed settings, samples keep the source
order. (Bytes can differ across Pillow/zlib/libjpeg builds; the manifest records the Pillow version.)

Array jobs: with ``num_tasks > 1`` shard boundaries are fixed in advance (every shard holds ``max_count``
samples but the last), task ``i`` writes its contiguous range of shards plus a part file, and whichever task
completes the set writes the manifest (identical content whoever does; the write is atomic). The shards are
then the same bytes as a single-task run.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
from collections.abc import Iterable, Sequence, Sized
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image

from simclr.data.errors import BadSampleError, DataError, ManifestError
from simclr.data.shards.sources.base import FileBytes
from simclr.data.shards.codec import (
    EXTENSION,
    array_to_pil,
    check_format,
    decode_pil,
    encode_image,
    probe,
    sniff_format,
    to_storable,
)
from simclr.data.shards.columns import SPLIT_INDEX_NAME, build_split_index
from simclr.data.shards.index import IndexEntry, format_index, read_index
from simclr.data.shards.keys import check_key
from simclr.data.shards.manifest import MANIFEST_NAME, Manifest, ShardInfo, file_sha256, index_name, shard_name
from simclr.data.shards.progress import Progress
from simclr.data.shards.sources.base import ImageLike, SampleSource
from simclr.atomic import atomic_write_text

log = logging.getLogger("simclr.data")

DEFAULT_MAX_COUNT = 5000
PARTS_DIR = "parts"
_BLOCK = tarfile.BLOCKSIZE


def _padded(n: int) -> int:
    return (n + _BLOCK - 1) // _BLOCK * _BLOCK


class _ShardWriter:
    """One tar being written to a temporary name; ``close()`` renames it into place and writes its index."""

    def __init__(self, split_dir: Path, number: int) -> None:
        self.number = number
        self.path = split_dir / shard_name(number)
        self.index_path = split_dir / index_name(number)
        self.tmp = split_dir / f".{self.path.name}.tmp-{os.getpid()}"
        self.file = open(self.tmp, "wb")
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.GNU_FORMAT)
        self.entries: list[IndexEntry] = []
        self.bytes = 0

    def _member(self, name: str, data: bytes) -> int:
        """Add one member with fixed metadata; returns the byte offset of its data in the tar."""
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mtime = 0
        ti.mode = 0o444
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        header = ti.tobuf(self.tar.format, self.tar.encoding, self.tar.errors)
        start = self.tar.offset
        self.tar.addfile(ti, io.BytesIO(data))
        return start + len(header)

    def estimate(self, key: str, payload: bytes) -> int:
        """Bytes this sample adds (headers, data, padding; long keys add a GNU long-name block)."""
        long_names = 2 * (_BLOCK + _padded(len(key) + 8)) if len(key) + 8 > 100 else 0
        return 2 * _BLOCK + _padded(len(payload)) + _BLOCK + long_names

    def add(self, key: str, payload: bytes, ext: str, label: int, mode: str, width: int, height: int) -> None:
        offset = self._member(f"{key}.{ext}", payload)
        if label >= 0:
            self._member(f"{key}.cls", str(label).encode("ascii"))
        self.entries.append(IndexEntry(key, label, offset, len(payload), mode, width, height))
        self.bytes = self.tar.offset

    def close(self) -> ShardInfo:
        # Renamed into place complete, but not fsynced: the manifest (written last, fsynced) and the sha256
        # check at load time catch a shard lost to a crash; an fsync per shard costs seconds on busy disks.
        self.tar.close()
        self.file.close()
        os.replace(self.tmp, self.path)
        text = format_index(self.entries)
        tmp_index = self.index_path.with_name(f".{self.index_path.name}.tmp-{os.getpid()}")
        tmp_index.write_text(text, encoding="utf-8")
        os.replace(tmp_index, self.index_path)
        return ShardInfo(
            name=self.path.name,
            count=len(self.entries),
            bytes=self.path.stat().st_size,
            sha256=file_sha256(self.path),
            index=self.index_path.name,
            index_bytes=len(text.encode("utf-8")),
            index_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            first_key=self.entries[0].key,
        )

    def abort(self) -> None:
        try:
            self.tar.close()
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _payload(image: ImageLike, fmt: str, jpeg_quality: int, verify: bool) -> tuple[bytes, str, int, int]:
    """Encoded bytes in ``fmt`` plus (decode mode, width, height); bytes already in ``fmt`` pass unchanged."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        mode, w, h, wide = probe(data)  # (one header read)
        if sniff_format(data) == fmt and not wide:  # 16-bit files are stored scaled to 8 bits
            if verify:
                decode_pil(data, mode)
            return data, mode, w, h
        img: Image.Image = decode_pil(data, mode)
    elif isinstance(image, np.ndarray):
        img = array_to_pil(image)
    elif isinstance(image, Image.Image):
        img = image
    else:
        raise TypeError(f"image must be a PIL image, a uint8 array or bytes, got {type(image).__name__}")
    img = to_storable(img, fmt)
    return encode_image(img, fmt, jpeg_quality=jpeg_quality), img.mode, img.width, img.height


def _check_label(label: Any, num_classes: int, key: str, shard: Path) -> int:
    if label is None:
        return -1
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise BadSampleError(f"label must be an int or None, got {label!r}", path=shard, key=key)
    if not 0 <= int(label) < num_classes:
        raise BadSampleError(f"label {int(label)} outside the {num_classes} classes", path=shard, key=key)
    return int(label)


def clear_split(split_dir: Path, shard_numbers: Iterable[int] | None) -> None:
    """Remove the manifest first (so the split reads as unfinished), then stale shards/indexes."""
    (split_dir / MANIFEST_NAME).unlink(missing_ok=True)
    (split_dir / SPLIT_INDEX_NAME).unlink(missing_ok=True)
    if shard_numbers is None:
        for p in split_dir.glob("shard-*"):
            p.unlink()
        for p in split_dir.glob(".shard-*.tmp-*"):
            p.unlink()
    else:
        for k in shard_numbers:
            (split_dir / shard_name(k)).unlink(missing_ok=True)
            (split_dir / index_name(k)).unlink(missing_ok=True)


def write_shards(
    samples: Iterable[tuple[str, ImageLike, int | None]],
    out_dir: str | Path,
    *,
    split: str,
    max_count: int = DEFAULT_MAX_COUNT,
    max_bytes: int | None = None,
    image_format: str = "png",
    class_names: Sequence[str] | None = None,
    source: str | dict[str, Any] | None = None,
    jpeg_quality: int = 95,
    verify_images: bool = True,
    task_index: int = 0,
    num_tasks: int = 1,
    progress: bool | None = None,
) -> Manifest | None:
    """Write ``samples`` as shards of split ``split`` under the data root ``out_dir``; return the manifest.

    Args:
        samples: ``(key, image, label)`` triples (a :class:`SampleSource` or any iterable); keys unique, without
            '.'; label an int in ``[0, len(class_names))`` or None (stored as no ``.cls`` member, read as -1).
        out_dir: the data root; files go to ``out_dir/split``. Existing shards of the split are replaced.
        max_count / max_bytes: a new shard starts when the current one holds ``max_count`` samples or would
            exceed ``max_bytes`` (a single bigger sample still gets its own shard).
        image_format: "png" (lossless; Fashion-MNIST) or "jpeg". Encoded bytes already in this format are
            stored unchanged; other images are (re-)encoded (JPEG at ``jpeg_quality``).
        class_names, source: written to the manifest; taken from ``samples`` when it is a SampleSource.
        verify_images: fully decode passed-through bytes, so a corrupt input file fails here (naming it).
        task_index, num_tasks: array-job split; needs a sized ``samples`` and no ``max_bytes``.
        progress: bar/log lines (None: on when the split has more than 10k samples).

    Returns the manifest, or None for an array task that did not complete the set (another task writes it).
    Raises :class:`BadSampleError` naming the shard and key for a bad key, duplicate key, bad label or
    undecodable image.
    """
    fmt = check_format(image_format)
    if isinstance(split, str) is False or not split or "/" in split or split.startswith("."):
        raise ValueError(f"split must be a plain folder name, got {split!r}")
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    if num_tasks < 1 or not 0 <= task_index < num_tasks:
        raise ValueError(f"need 0 <= task_index < num_tasks, got task_index={task_index}, num_tasks={num_tasks}")
    if class_names is None:
        if not isinstance(samples, SampleSource):
            raise ValueError("class_names is required unless samples is a SampleSource")
        class_names = samples.class_names
    class_names = [str(c) for c in class_names]
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names has duplicates: {class_names}")
    if source is None:
        source = samples.describe() if isinstance(samples, SampleSource) else {"type": "samples"}
    elif isinstance(source, str):
        source = {"type": source}
    writer = {
        "max_count": max_count,
        "max_bytes": max_bytes,
        "jpeg_quality": jpeg_quality if fmt == "jpeg" else None,
        "pillow": PIL.__version__,
    }
    split_dir = Path(out_dir) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    total = len(samples) if isinstance(samples, Sized) else None
    show = progress if progress is not None else (total or 0) > 10_000

    if num_tasks == 1:
        clear_split(split_dir, None)
        shutil.rmtree(split_dir / PARTS_DIR, ignore_errors=True)
        with Progress(total, f"shards {split}", enabled=show) as bar:
            infos = _write_range(samples, split_dir, 0, max_count, max_bytes, fmt, jpeg_quality, verify_images,
                                 len(class_names), bar, roll=True)
        return write_manifest(split_dir, split, infos, class_names, source, fmt, writer)

    if total is None:
        raise ValueError("num_tasks > 1 needs a sized sample sequence (e.g. a SampleSource)")
    if max_bytes is not None:
        raise ValueError("num_tasks > 1 needs count-based shards: max_bytes must be None")
    num_shards = max(1, -(-total // max_count))
    first, stop = task_index * num_shards // num_tasks, (task_index + 1) * num_shards // num_tasks
    clear_split(split_dir, range(first, stop))
    seq: Sequence[Any] = samples if isinstance(samples, Sequence) else list(samples)
    infos = []
    with Progress((min(total, stop * max_count) - first * max_count), f"shards {split} task {task_index}", enabled=show) as bar:
        for k in range(first, stop):
            chunk = seq[k * max_count : min(total, (k + 1) * max_count)]
            infos += _write_range(chunk, split_dir, k, max_count, None, fmt, jpeg_quality, verify_images,
                                  len(class_names), bar, roll=False)
    plan = {"num_samples": total, "num_shards": num_shards, "num_tasks": num_tasks, "writer": writer,
            "image_format": fmt, "class_names": class_names, "source": source}
    part = split_dir / PARTS_DIR / f"part-{task_index:05d}-of-{num_tasks:05d}.json"
    atomic_write_text(part, json.dumps({"plan": plan, "first": first, "stop": stop,
                                        "shards": [asdict(i) for i in infos]}, sort_keys=True) + "\n")
    return finalize_split(out_dir, split, plan=plan)


def _write_range(
    samples: Iterable[tuple[str, ImageLike, int | None]],
    split_dir: Path,
    first_number: int,
    max_count: int,
    max_bytes: int | None,
    fmt: str,
    jpeg_quality: int,
    verify: bool,
    num_classes: int,
    bar: Progress,
    *,
    roll: bool,
) -> list[ShardInfo]:
    """Write samples into shards numbered from ``first_number``; ``roll``: start new shards as limits hit."""
    ext = EXTENSION[fmt]
    infos: list[ShardInfo] = []
    seen: dict[str, int] = {}
    cur: _ShardWriter | None = None
    number = first_number
    try:
        for item in samples:
            if not isinstance(item, tuple) or len(item) != 3:
                raise ValueError(f"samples must yield (key, image, label) triples, got {type(item).__name__}")
            key, image, label = item
            shard_path = split_dir / shard_name(number if cur is None else cur.number)
            try:
                check_key(key)
            except BadSampleError as e:
                raise BadSampleError(e.reason, path=shard_path, key=str(key)) from None
            if key in seen:
                raise BadSampleError(f"duplicate key (first in {shard_name(seen[key])})", path=shard_path, key=key)
            lab = _check_label(label, num_classes, key, shard_path)
            try:
                payload, mode, w, h = _payload(image, fmt, jpeg_quality, verify)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                # An input file (ImageFolder) is named itself; an in-memory image by the shard it was going into.
                where = image.path if isinstance(image, FileBytes) else shard_path
                raise BadSampleError(f"cannot read/encode the image: {e}", path=where, key=key) from e
            if cur is not None and roll:
                full = len(cur.entries) >= max_count
                too_big = max_bytes is not None and cur.bytes + cur.estimate(key, payload) + 2 * _BLOCK > max_bytes
                if full or too_big:
                    infos.append(cur.close())
                    cur = None
                    number += 1
            if cur is None:
                cur = _ShardWriter(split_dir, number)
            cur.add(key, payload, ext, lab, mode, w, h)
            seen[key] = cur.number
            bar.update(1)
        if cur is not None:
            infos.append(cur.close())
            cur = None
    except BaseException:
        if cur is not None:
            cur.abort()
        raise
    if not infos and roll:
        raise DataError("no samples to write", path=split_dir)
    return infos


def write_manifest(
    split_dir: Path,
    split: str,
    infos: list[ShardInfo],
    class_names: list[str],
    source: dict[str, Any],
    fmt: str,
    writer: dict[str, Any],
) -> Manifest:
    """Aggregate the shard indexes into the manifest (checking keys across shards), build the split index from
    them (simclr.data.shards.columns), and write the manifest last."""
    counts = np.zeros(len(class_names), dtype=np.int64)
    unlabelled = 0
    modes: set[str] = set()
    hmin = wmin = 1 << 62
    hmax = wmax = 0
    seen: dict[str, str] = {}
    parts = []
    for info in infos:
        idx = read_index(split_dir / info.index)
        parts.append(idx)
        for key in idx.keys:
            if key in seen:
                raise BadSampleError(f"duplicate key (also in {seen[key]})", path=info.tar_path(split_dir), key=key)
            seen[key] = info.name
        lab = idx.labels
        unlabelled += int((lab < 0).sum())
        counts += np.bincount(lab[lab >= 0], minlength=len(class_names))[: len(class_names)]
        modes.update(idx.modes)
        hmin, hmax = min(hmin, int(idx.heights.min())), max(hmax, int(idx.heights.max()))
        wmin, wmax = min(wmin, int(idx.widths.min())), max(wmax, int(idx.widths.max()))
    manifest = Manifest(
        split=split,
        num_samples=sum(i.count for i in infos),
        class_names=class_names,
        source=source,
        image_format=fmt,
        image_mode="L" if modes == {"L"} else "RGB",
        image_size=[hmin, wmin] if (hmin, wmin) == (hmax, wmax) else None,
        image_size_range=[[hmin, wmin], [hmax, wmax]],
        label_counts=[int(c) for c in counts],
        num_unlabelled=unlabelled,
        shards=infos,
        writer=writer,
    )
    manifest.check(split_dir / MANIFEST_NAME)
    nbytes, sha = build_split_index(split_dir, infos, parts)
    manifest.split_index = {"name": SPLIT_INDEX_NAME, "bytes": nbytes, "sha256": sha}
    manifest.save(split_dir)
    log.info("wrote %s: %d samples in %d shards", split_dir / MANIFEST_NAME, manifest.num_samples, len(infos))
    return manifest


def finalize_split(out_dir: str | Path, split: str, *, plan: dict[str, Any] | None = None) -> Manifest | None:
    """Write the manifest of an array-job split once every task's part file is there; None while some are not.

    ``plan``: the writing plan the parts must share (the calling task's); None = all part files must agree.
    Safe to call from several tasks at once: they write the same bytes, atomically.
    """
    split_dir = Path(out_dir) / split
    parts_dir = split_dir / PARTS_DIR
    parts = sorted(parts_dir.glob("part-*-of-*.json"))
    if not parts:
        raise ManifestError("no part files: was this split written by an array job?", path=parts_dir)
    loaded = []
    for p in parts:
        try:
            loaded.append((p, json.loads(p.read_text())))
        except (OSError, json.JSONDecodeError) as e:
            raise ManifestError(f"unreadable part file: {e}", path=p) from e
    if plan is None:
        plans = {json.dumps(d["plan"], sort_keys=True) for _, d in loaded}
        if len(plans) != 1:
            raise ManifestError("part files from different writing plans; rewrite the split", path=parts_dir)
        plan = loaded[0][1]["plan"]
    newest = json.loads(json.dumps(plan))  # the JSON-normalised plan, as the part files hold it
    n = newest["num_tasks"]
    mine = [(p, d) for p, d in loaded if p.name.endswith(f"-of-{n:05d}.json") and d["plan"] == newest]
    if len(mine) < n:
        return None
    mine.sort(key=lambda pd: pd[1]["first"])
    infos: list[ShardInfo] = []
    for p, d in mine:
        if d["first"] != len(infos):
            raise ManifestError(f"part covers shards from {d['first']}, expected {len(infos)}", path=p)
        infos += [ShardInfo(**s) for s in d["shards"]]
    if len(infos) != newest["num_shards"]:
        raise ManifestError(f"parts hold {len(infos)} shards, plan says {newest['num_shards']}", path=parts_dir)
    for info in infos:
        if not (split_dir / info.name).is_file():
            return None
    return write_manifest(split_dir, split, infos, newest["class_names"], newest["source"], newest["image_format"],
                     newest["writer"])

