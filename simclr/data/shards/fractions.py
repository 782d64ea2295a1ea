"""Class-balanced, nested label fractions as key lists, like the official ``1percent.txt`` / ``10percent.txt``.

SimCLRv2 fine-tunes on 1% and 10% of the ImageNet labels (paper section 4; the official repo ships the two key
lists). Here, for a split's labelled samples:

- each class is ordered by a seeded hash of the sample keys (a pure function of (seed, key): independent of the
  shard layout and of which other fractions are asked for);
- a fraction f takes the first ``round(f * N_labelled / C)`` samples of every class (at least 1) — the same
  number per class, i.e. class-balanced; ``per_class=k`` takes the first k of every class;
- so every smaller subset is a prefix of every larger one: the 1% subset lies inside the 10% one.

Files: ``<data_root>/<split>/fractions/<name>.txt`` with one key a line (sorted), ``name`` = ``1percent``,
``10percent``, ``0.5percent``, ``25perclass`` ...; plus ``fractions.json`` with the seed and the counts.
The lists a folder already holds (named in its ``fractions.json``) are written again with each call's seed,
so that every list of a folder is of one seed and nested in the others; one that the current shards can no
longer fill is removed, with a warning.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simclr.data.errors import DataError
from simclr.data.rng import mix
from simclr.data.shards.keys import check_key, key_hashes
from simclr.data.shards.shardset import open_split
from simclr.atomic import atomic_write_text

FRACTIONS_DIR = "fractions"
log = logging.getLogger("simclr.data")


def fraction_name(fraction: float) -> str:
    """0.01 -> "1percent", 0.1 -> "10percent", 0.005 -> "0.5percent"."""
    return f"{round(fraction * 100, 6):g}percent"


def fraction_path(data_root: str | Path, name: str, split: str = "train") -> Path:
    """Where the key list ``name`` (e.g. "1percent") of ``split`` lives."""
    return Path(data_root) / split / FRACTIONS_DIR / f"{name}.txt"


def fraction_keys_file(data_root: str | Path, fraction: float, split: str = "train") -> Path | None:
    """The key list of a label fraction (``1percent.txt`` for 0.01); None for all labels.

    None means every LABELLED sample: a stage training on labels loads with ``labelled_only=True``, since the
    split may also hold unlabelled ones (label -1, e.g. the ``arrays`` source or STL-10's unlabelled set)."""
    if fraction >= 1.0:
        return None
    path = fraction_path(data_root, fraction_name(fraction), split)
    if not path.is_file():
        have = sorted(p.name for p in path.parent.glob("*percent.txt")) if path.parent.is_dir() else []
        raise FileNotFoundError(
            f"finetune.label_fraction={fraction}: no key list {path} (have: {have or 'none'}); "
            "make it with simclr-shards --fractions ..."
        )
    return path


def write_label_fractions(
    data_root: str | Path,
    fractions: Sequence[float] = (0.01, 0.1),
    seed: int = 0,
    per_class: int | None = None,
    *,
    split: str = "train",
) -> dict[str, Path]:
    """Write the key lists of ``fractions`` (and of ``per_class`` samples per class) for ``split``.

    Returns ``{name: path}``, e.g. ``{"1percent": .../1percent.txt, "10percent": ...}``. Raises ValueError
    for a fraction outside (0, 1] and :class:`DataError` when a class has too few labelled samples.
    """
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"fractions must be in (0, 1], got {f}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    shards = open_split(data_root, split, verify="size")
    labels = shards.labels
    num_classes = shards.manifest.num_classes
    labelled = int((labels >= 0).sum())
    if labelled == 0:
        raise DataError("no labelled samples to choose label fractions from", path=shards.split_dir)
    salt = mix(seed, 0xF4AC)
    hashes = key_hashes(shards.keys, salt)
    by_class = []
    for c in range(num_classes):
        rows = np.nonzero(labels == c)[0]
        by_class.append(rows[np.argsort(hashes[rows], kind="stable")])

    wanted: dict[str, int] = {}
    for f in fractions:
        wanted[fraction_name(f)] = _per_class(f, labelled, num_classes)
    if per_class is not None:
        wanted[f"{per_class}perclass"] = per_class

    out_dir = Path(data_root) / split / FRACTIONS_DIR
    # The lists an earlier call left here: written again with this seed (a 10percent.txt of seed 0 beside a
    # new 1percent.txt and a fractions.json of seed 5 was neither nested nor described).
    earlier = {name: k for name, k in _listed(out_dir, labelled, num_classes).items() if name not in wanted}
    lists: dict[str, list[str]] = {}
    summary: dict[str, dict[str, int]] = {}
    dropped: list[str] = []
    # Every list is chosen before any is written: a class too small for the 10% list used to fail after
    # 1percent.txt was rewritten (with this call's seed), leaving it out of step with fractions.json.
    for name, k in {**wanted, **earlier}.items():
        short = [shards.class_names[c] for c in range(num_classes) if 0 < len(by_class[c]) < k]
        if short and name in earlier:
            log.warning("%s: removing the earlier key list %s.txt: classes %s now hold fewer than its %d per class",
                        out_dir, name, short, k)
            dropped.append(name)
            continue
        if short:
            hint = "" if name.endswith("perclass") else " (per_class= / --per-class gives a fixed number per class)"
            raise DataError(f"{name}: {k} samples per class wanted, but classes {short} have fewer; nothing was "
                            f"written{hint}", path=shards.split_dir)
        # Classes without any labelled sample (e.g. a test-only class) contribute nothing.
        lists[name] = sorted(shards.keys[r] for c in range(num_classes) for r in by_class[c][:k])
        summary[name] = {"per_class": k, "count": len(lists[name])}
    for name in dropped:
        (out_dir / f"{name}.txt").unlink(missing_ok=True)
    paths: dict[str, Path] = {}
    for name, chosen in lists.items():
        path = out_dir / f"{name}.txt"
        atomic_write_text(path, "".join(k_ + "\n" for k_ in chosen))
        if name in wanted:
            paths[name] = path
    atomic_write_text(out_dir / "fractions.json", json.dumps({"seed": seed, "split": split, "fractions": summary},
                                                            indent=1, sort_keys=True) + "\n")
    return paths


_LIST_NAME = re.compile(r"^(?:(?P<pct>\d+(?:\.\d+)?)percent|(?P<k>\d+)perclass)$")


def _listed(out_dir: Path, labelled: int, num_classes: int) -> dict[str, int]:
    """``{name: samples per class}`` of the lists a folder's ``fractions.json`` names, for the shards as they
    are now (``10percent`` of 200 labels over 10 classes: 2); nothing when it has none or cannot be read (it
    is rewritten whole)."""
    try:
        entries = json.loads((out_dir / "fractions.json").read_text(encoding="utf-8")).get("fractions", {})
    except (OSError, ValueError, AttributeError):
        return {}
    out: dict[str, int] = {}
    for name in entries if isinstance(entries, dict) else ():
        m = _LIST_NAME.match(str(name))
        if m is None:
            continue
        if m["k"] is not None:
            out[name] = int(m["k"])
        elif 0 < float(m["pct"]) <= 100:
            out[name] = _per_class(float(m["pct"]) / 100, labelled, num_classes)
    return {n: k for n, k in out.items() if k >= 1}


def _per_class(fraction: float, labelled: int, num_classes: int) -> int:
    """Samples per class of a fraction: the same number in every class (at least 1)."""
    return max(1, int(round(fraction * labelled / num_classes)))


def read_keys(path: str | Path) -> list[str]:
    """Keys of a key-list file (one a line; blank lines ignored); ValueError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read key list: {e}", path=path) from e
    keys = []
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            keys.append(check_key(line))
        except ValueError as e:
            raise DataError(f"bad key on line {i}: {e}", path=path) from e
    if not keys:
        raise DataError("key list is empty", path=path)
    return keys
