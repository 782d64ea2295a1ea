"""Pipeline stage 0: images -> WebDataset shards + manifests + label-fraction key lists (a data root).

    simclr-shards --source fashion_mnist --out ~/.cache/simclr-suite/data/fashion-mnist
    simclr-shards --source imagefolder --input /data/imagenet --out /data/imagenet-shards --format jpeg \\
        --splits train val --shard-size 5000
    simclr-shards --source arrays --input arrays.npz --out /tmp/root        # <split>_images/_labels
    # as a SLURM array job, one task per range of shards:
    simclr-shards ... --task-index $SLURM_ARRAY_TASK_ID --num-tasks $SLURM_ARRAY_TASK_COUNT

An existing data root that matches the request (same source, same writer settings) and passes the check
(manifest, sizes, sha256) is reused, not rewritten — rerunning the demo is instant; ``--force`` rewrites.
:func:`build_dataset` is the plain function the job layer submits (importable by module path).
Inputs: ``fashion_mnist`` reads the idx files of the Debian package (``--input`` defaults to its folder);
``imagefolder`` reads ``<input>/<split>/<class>/...``; ``arrays`` reads an ``.npz`` with ``<split>_images``
(uint8 ``[N, H, W(, C)]``), optional ``<split>_labels`` and ``class_names``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simclr.data.errors import DataError
from simclr.data.shards.codec import check_format
from simclr.data.shards.fractions import write_label_fractions
from simclr.data.shards.manifest import Manifest
from simclr.data.shards.shardset import open_split
from simclr.data.shards.sources import SampleSource, fashion_mnist_samples, imagefolder_samples, npz_samples
from simclr.data.shards.sources.fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from simclr.data.shards.write import DEFAULT_MAX_COUNT, write_shards

log = logging.getLogger("jobs.cli.shards")

SOURCES = ("fashion_mnist", "imagefolder", "arrays")
DEFAULT_FORMAT = {"fashion_mnist": "png", "imagefolder": "jpeg", "arrays": "png"}


def open_source(source: str, input: str | Path | None, split: str,
                class_names: list[str] | None = None) -> SampleSource:
    """The sample source of ``split`` for a ``--source`` / ``--input`` pair (an ImageFolder split numbers its
    classes as ``class_names``, the train split's, when given)."""
    if source == "fashion_mnist":
        if split not in ("train", "test"):
            raise ValueError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}")
        return fashion_mnist_samples(split, input or FASHION_MNIST_ROOT)
    if input is None:
        raise ValueError(f"--input is required for --source {source}")
    if source == "imagefolder":
        folder = Path(input) / split
        if not folder.is_dir():
            raise DataError(f"no folder for split {split!r} (expected <input>/<split>/<class>/...)", path=folder)
        return imagefolder_samples(folder, class_names)
    if source == "arrays":
        return npz_samples(input, split)
    raise ValueError(f"source must be one of {SOURCES}, got {source!r}")


def _reusable(out: Path, split: str, expect: dict[str, Any], verify: str) -> Manifest | None:
    """The existing manifest of ``split`` if it was written from the same request and checks out."""
    try:
        m = Manifest.load(out / split)
    except DataError:
        return None
    have = {"source": m.source, "image_format": m.image_format, "class_names": m.class_names,
            "max_count": m.writer.get("max_count"), "max_bytes": m.writer.get("max_bytes"),
            "jpeg_quality": m.writer.get("jpeg_quality")}
    if have != expect:
        log.info("%s: existing shards were written from another request; rewriting", split)
        return None
    try:
        open_split(out, split, verify="sha256" if verify == "sha256" else "size")
    except DataError as e:
        log.warning("%s: existing shards fail the check (%s); rewriting", split, e)
        return None
    return m


def build_dataset(
    source: str,
    input: str | Path | None,
    out: str | Path,
    *,
    splits: Sequence[str] = ("train", "test"),
    shard_size: int = DEFAULT_MAX_COUNT,
    max_bytes: int | None = None,
    image_format: str | None = None,
    jpeg_quality: int = 95,
    fractions: Sequence[float] = (0.01, 0.1),
    per_class: int | None = None,
    seed: int = 0,
    task_index: int = 0,
    num_tasks: int = 1,
    limit: int | None = None,
    force: bool = False,
    verify: str = "sha256",
    verify_images: bool = True,
    progress: bool | None = None,
) -> dict[str, Manifest | None]:
    """Write (or reuse) the shards of ``splits`` under the data root ``out``, then the label fractions of
    "train" (when it is among the splits). Returns ``{split: manifest}``; a manifest is None for an array task
    whose split is still being written by other tasks.

    ``limit`` keeps N samples of each split, spread evenly over its classes (unlabelled samples count as one
    more class; quick demos and tests). ``verify``: "sha256" or "size",
    how an existing root is checked before it is reused.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if verify not in ("sha256", "size"):
        raise ValueError(f"verify must be 'sha256' or 'size', got {verify!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if not splits:
        raise ValueError("splits must name at least one split")
    fmt = check_format(image_format or DEFAULT_FORMAT[source])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Manifest | None] = {}
    # One class list for every split: the train split's folders (else the first split's). Numbered per split,
    # a test split lacking one class folder had every later label mean another class.
    classes: list[str] | None = None
    opened: dict[str, SampleSource] = {}  # (listing a large tree once)
    if source == "imagefolder":
        first = "train" if "train" in splits else splits[0]
        opened[first] = open_source(source, input, first)
        classes = list(opened[first].class_names)
    for split in splits:
        src = opened.pop(split, None) or open_source(source, input, split, classes)
        desc = src.describe()
        samples: Sequence[Any] = src
        if limit is not None and limit < len(src):
            # Spread over the classes: the first N of an ImageFolder (listed class by class) held only its
            # first classes. "limit_rule" keeps shards written by the old first-N rule from being reused.
            samples = src.balanced_subset(limit)
            desc = {**desc, "limit": limit, "limit_rule": "class-balanced", "num_samples": limit}
        expect = {"source": desc, "image_format": fmt, "class_names": list(src.class_names), "max_count": shard_size,
                  "max_bytes": max_bytes, "jpeg_quality": jpeg_quality if fmt == "jpeg" else None}
        reused = None if force else _reusable(out, split, expect, verify)
        if reused is not None:
            log.info("%s: reusing %d samples in %d shards at %s", split, reused.num_samples, len(reused.shards),
                     out / split)
            result[split] = reused
            continue
        log.info("%s: writing %d samples from %s (%s) to %s", split, len(samples), source, fmt, out / split)
        result[split] = write_shards(
            samples,
            out,
            split=split,
            max_count=shard_size,
            max_bytes=max_bytes,
            image_format=fmt,
            class_names=src.class_names,
            source=desc,
            jpeg_quality=jpeg_quality,
            verify_images=verify_images,
            task_index=task_index,
            num_tasks=num_tasks,
            progress=progress,
        )
        m = result[split]
        if m is not None:
            log.info("%s: %d samples in %d shards", split, m.num_samples, len(m.shards))
    if "train" in splits and result.get("train") is not None and (fractions or per_class):
        paths = write_label_fractions(out, fractions=tuple(fractions), seed=seed, per_class=per_class)
        for name, path in paths.items():
            log.info("label fraction %s: %s", name, path)
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="simclr-shards", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--input", type=Path, default=None, help="Fashion-MNIST folder / ImageFolder root / .npz file")
    p.add_argument("--out", type=Path, required=True, help="the data root to write")
    p.add_argument("--splits", nargs="+", default=["train", "test"])
    p.add_argument("--shard-size", type=int, default=DEFAULT_MAX_COUNT, help="samples per shard")
    p.add_argument("--max-bytes", type=int, default=None, help="bytes per shard (single task only)")
    p.add_argument("--format", choices=("png", "jpeg"), default=None, help="default: png, jpeg for imagefolder")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--fractions", type=float, nargs="*", default=[0.01, 0.1], help="label fractions of train")
    p.add_argument("--per-class", type=int, default=None, help="also a key list with N labels per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the label-fraction choice")
    p.add_argument("--task-index", type=int, default=0, help="array-job task index")
    p.add_argument("--num-tasks", type=int, default=1, help="array-job task count")
    p.add_argument("--limit", type=int, default=None,
                   help="only N samples of each split, spread evenly over its classes")
    p.add_argument("--force", action="store_true", help="rewrite even when a matching data root exists")
    p.add_argument("--verify", choices=("sha256", "size"), default="sha256", help="check of an existing root")
    p.add_argument("--no-verify-images", action="store_true", help="do not fully decode passed-through files")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        result = build_dataset(
            args.source,
            args.input,
            args.out,
            splits=args.splits,
            shard_size=args.shard_size,
            max_bytes=args.max_bytes,
            image_format=args.format,
            jpeg_quality=args.jpeg_quality,
            fractions=args.fractions,
            per_class=args.per_class,
            seed=args.seed,
            task_index=args.task_index,
            num_tasks=args.num_tasks,
            limit=args.limit,
            force=args.force,
            verify=args.verify,
            verify_images=not args.no_verify_images,
            progress={"auto": None, "on": True, "off": False}[args.progress],
        )
    except (DataError, ValueError) as e:
        log.error("%s", e)
        return 2
    for split, m in result.items():
        state = f"{m.num_samples} samples, {len(m.shards)} shards" if m else "waiting for the other array tasks"
        print(f"{split}: {state} -> {Path(args.out) / split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
