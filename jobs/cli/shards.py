"""Pipeline stage 0: images -> WebDataset shards + manifests + label-fraction key lists (a data root).

    simclr-shards --source fashion_mnist --out ~/.cache/simclr-suite/data/fashion-mnist
    simclr-shards --reindex /data/imagenet-shards   # a root written before split indexes: index it, no re-sharding
    simclr-shards --source imagefolder --input /data/imagenet --out /data/imagenet-shards --format jpeg \\
        --splits train val --shard-size 5000
    simclr-shards --source arrays --input arrays.npz --out /tmp/root        # <split>_images/_labels
    # as a SLURM array job, one task per range of shards:
    simclr-shards ... --task-index $SLURM_ARRAY_TASK_ID --num-tasks $SLURM_ARRAY_TASK_COUNT
    # WebDataset shards you already have, indexed where they are (no tar copied), with the official 1% list:
    simclr-shards --source webdataset --input '/data/in1k-wds/train-{000000..001281}.tar' --out /data/in1k \
        --split train --class-map synsets.txt --fraction-file 1percent=1percent.txt --fraction-file 10percent=...

An existing data root that matches the request (same source, same writer settings) and passes the check
(manifest, sizes, sha256) is reused, not rewritten — rerunning the demo is instant; ``--force`` rewrites.
:func:`build_dataset` is the plain function the job layer submits (importable by module path).
Inputs: ``fashion_mnist`` reads the idx files of the Debian package (``--input`` defaults to its folder);
``imagefolder`` reads ``<input>/<split>/<class>/...``; ``arrays`` reads an ``.npz`` with ``<split>_images``
(uint8 ``[N, H, W(, C)]``), optional ``<split>_labels`` and ``class_names``; ``webdataset`` indexes the tars of
``--input`` (a brace pattern, a folder or a list file) in place, one ``--split`` a call
(:mod:`simclr.data.shards.inplace`). ``--fraction-file NAME=PATH`` imports a key list of the train split (keys,
file names or paths; :func:`simclr.data.shards.fractions.import_key_list`).
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
from simclr.data.shards.columns import SplitIndexError, reindex
from simclr.data.shards.fractions import fraction_name, import_key_list, write_label_fractions
from simclr.data.shards.inplace import expand_inputs, index_webdataset, listing_digest, read_class_map
from simclr.data.shards.manifest import Manifest
from simclr.data.shards.shardset import open_split
from simclr.data.shards.sources import SampleSource, fashion_mnist_samples, imagefolder_samples, npz_samples
from simclr.data.shards.sources.fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from simclr.data.shards.write import DEFAULT_MAX_COUNT, write_shards

log = logging.getLogger("jobs.cli.shards")

SOURCES = ("fashion_mnist", "imagefolder", "arrays", "webdataset")
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


def index_in_place(
    input: str | Path,
    out: str | Path,
    split: str,
    *,
    image_key: str | None = None,
    label_field: str | None = None,
    class_map: str | Path | None = None,
    num_classes: int | None = None,
    verify_images: bool = False,
    skip_bad: bool = False,
    force: bool = False,
    progress: bool | None = None,
) -> Manifest:
    """Index the WebDataset tars of ``input`` as ``split`` of the data root ``out`` (reused when the same tars,
    unchanged, were indexed with the same settings). Without a class map or ``num_classes``, a split other
    than train takes the train split's classes, so that both number them alike."""
    tars = expand_inputs(input)
    classes = read_class_map(class_map) if class_map is not None else None
    if classes is None and num_classes is None and split != "train":
        try:
            classes = Manifest.load(Path(out) / "train").class_names
        except DataError:
            pass
    desc = {"type": "webdataset", "input": str(input), "num_tars": len(tars), "listing_sha256": listing_digest(tars),
            "image_key": image_key, "label_field": label_field,
            "class_map": str(Path(class_map).resolve()) if class_map is not None else None,
            "num_classes": num_classes, "verify_images": verify_images, "skip_bad": skip_bad}
    if not force:
        try:
            m = Manifest.load(Path(out) / split)
            if {k: v for k, v in m.source.items() if k != "skipped"} == desc and (classes in (None, m.class_names)):
                _open_or_reindex(out, split, "size")
                log.info("%s: reusing the index of %d samples in %d tars at %s", split, m.num_samples,
                         len(m.shards), Path(out) / split)
                return m
        except DataError:
            pass
    log.info("%s: indexing %d tars of %s in place", split, len(tars), input)
    return index_webdataset(tars, out, split=split, image_key=image_key, label_field=label_field,
                            class_names=classes, num_classes=num_classes, verify_images=verify_images,
                            skip_bad=skip_bad, source=desc, progress=progress)


def _open_or_reindex(out: Path | str, split: str, verify: str) -> None:
    """Open the split to check it; a root written before split indexes gets one (nothing is re-sharded)."""
    try:
        open_split(out, split, verify="sha256" if verify == "sha256" else "size")
    except SplitIndexError as e:
        log.info("%s: %s; building the split index", split, e)
        reindex(out, [split])
        open_split(out, split, verify="sha256" if verify == "sha256" else "size")


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
        _open_or_reindex(out, split, "sha256" if verify == "sha256" else "size")
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
    verify_images: bool | None = None,
    progress: bool | None = None,
    image_key: str | None = None,
    label_field: str | None = None,
    class_map: str | Path | None = None,
    num_classes: int | None = None,
    skip_bad: bool = False,
    fraction_files: Sequence[tuple[str, str | Path]] = (),
    allow_missing: bool = False,
) -> dict[str, Manifest | None]:
    """Write (or reuse) the shards of ``splits`` under the data root ``out``, then the label fractions of
    "train" (when it is among the splits). Returns ``{split: manifest}``; a manifest is None for an array task
    whose split is still being written by other tasks.

    ``limit`` keeps N samples of each split, spread evenly over its classes (unlabelled samples count as one
    more class; quick demos and tests). ``verify``: "sha256" or "size",
    how an existing root is checked before it is reused. ``verify_images``: decode every image (default: on
    when writing shards, off when indexing in place). ``image_key`` ... ``skip_bad``: see :func:`index_in_place`.
    ``fraction_files``: ``(name, list file)`` pairs imported as key lists of train after the chosen fractions
    (a chosen fraction of the same name is not made).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if verify not in ("sha256", "size"):
        raise ValueError(f"verify must be 'sha256' or 'size', got {verify!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if not splits:
        raise ValueError("splits must name at least one split")
    out = Path(out)
    if source == "webdataset":
        if len(splits) != 1 or input is None:
            raise ValueError("--source webdataset indexes one split a call: give --split NAME and --input its tars")
        if num_tasks != 1 or limit is not None:
            raise ValueError("--num-tasks and --limit do not apply to --source webdataset (nothing is written)")
        result: dict[str, Manifest | None] = {splits[0]: index_in_place(
            input, out, splits[0], image_key=image_key, label_field=label_field, class_map=class_map,
            num_classes=num_classes, verify_images=bool(verify_images), skip_bad=skip_bad, force=force,
            progress=progress)}
    else:
        result = _write_sources(source, input, out, splits, shard_size, max_bytes, image_format, jpeg_quality,
                                task_index, num_tasks, limit, force, verify, verify_images is not False, progress)
    train = result.get("train")
    imported = {name for name, _ in fraction_files}
    fractions = [f for f in fractions if fraction_name(f) not in imported]
    per_class = per_class if per_class is None or f"{per_class}perclass" not in imported else None
    if train is not None and (fractions or per_class):
        if source == "webdataset" and train.num_unlabelled == train.num_samples:
            log.info("train: no labelled samples, so no label fractions")
        else:
            paths = write_label_fractions(out, fractions=tuple(fractions), seed=seed, per_class=per_class)
            for name, path in paths.items():
                log.info("label fraction %s: %s", name, path)
    for name, list_file in fraction_files:
        path = import_key_list(out, name, list_file, allow_missing=allow_missing)
        log.info("key list %s imported from %s: %s", name, list_file, path)
    return result


def _write_sources(
    source: str,
    input: str | Path | None,
    out: Path,
    splits: Sequence[str],
    shard_size: int,
    max_bytes: int | None,
    image_format: str | None,
    jpeg_quality: int,
    task_index: int,
    num_tasks: int,
    limit: int | None,
    force: bool,
    verify: str,
    verify_images: bool,
    progress: bool | None,
) -> dict[str, Manifest | None]:
    """Write (or reuse) the shards of each split from a sample source."""
    fmt = check_format(image_format or DEFAULT_FORMAT[source])
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
    return result


def _name_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="simclr-shards", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=SOURCES, help="required unless --reindex")
    p.add_argument("--reindex", type=Path, default=None, metavar="DATA_ROOT",
                   help="only build the split index of every split of DATA_ROOT (a root written before split "
                        "indexes existed: nothing is re-sharded)")
    p.add_argument("--input", default=None,
                   help="Fashion-MNIST folder / ImageFolder root / .npz file / WebDataset tars (brace pattern, folder "
                        "or list file)")
    p.add_argument("--out", type=Path, default=None, help="the data root to write (required unless --reindex)")
    p.add_argument("--splits", "--split", nargs="+", default=["train", "test"])
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
    images = p.add_mutually_exclusive_group()
    images.add_argument("--verify-images", dest="verify_images", action="store_true", default=None,
                        help="decode every image when indexing in place (default: headers only)")
    images.add_argument("--no-verify-images", dest="verify_images", action="store_false",
                        help="do not fully decode passed-through files")
    wds = p.add_argument_group("--source webdataset")
    wds.add_argument("--image-key", default=None, help="the image member's extension (default: the first of "
                                                       "jpg, jpeg, png, webp, ppm)")
    wds.add_argument("--label-field", default=None, help="take the label from this field of the json member "
                                                         "(default: the cls member)")
    wds.add_argument("--class-map", type=Path, default=None,
                     help="class names by index: one a line, or 'name index' lines; names in labels are mapped")
    wds.add_argument("--num-classes", type=int, default=None, help="number of classes (without a class map)")
    wds.add_argument("--skip-bad", action="store_true", help="skip bad samples (counted, listed in skipped.tsv)")
    p.add_argument("--fraction-file", action="append", default=[], metavar="NAME=PATH", type=_name_path,
                   help="import a key list of train (keys, file names or paths), e.g. 1percent=1percent.txt")
    p.add_argument("--allow-missing", action="store_true",
                   help="lines of a --fraction-file that match no labelled sample are a warning, not an error")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.reindex is None and (args.source is None or args.out is None):
        p.error("--source and --out are required (or --reindex DATA_ROOT)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.reindex is not None:
        try:
            done = reindex(args.reindex)
        except DataError as e:
            log.error("%s", e)
            return 2
        for split, index in done.items():
            print(f"{split}: split index of {index.num_samples} samples -> {args.reindex / split}")
        return 0
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
            verify_images=args.verify_images,
            progress={"auto": None, "on": True, "off": False}[args.progress],
            image_key=args.image_key,
            label_field=args.label_field,
            class_map=args.class_map,
            num_classes=args.num_classes,
            skip_bad=args.skip_bad,
            fraction_files=args.fraction_file,
            allow_missing=args.allow_missing,
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
