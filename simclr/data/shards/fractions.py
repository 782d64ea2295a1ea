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

A list can also be imported (:func:`import_key_list`), such as the official ``1percent.txt`` of SimCLRv2, whose
lines are ImageNet file names (``n01440764_10026.JPEG``). Each line is matched to one key of the split by
:data:`MATCH_RULE`. An imported list is recorded with its source and per-class counts, and is never replaced
by a chosen one (delete it, or import again, to change it).
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
from simclr.data.shards.keys import check_key, key_hashes, sanitize_key
from simclr.data.shards.shardset import open_split
from simclr.atomic import atomic_write_text

FRACTIONS_DIR = "fractions"
FRACTIONS_JSON = "fractions.json"
MATCH_RULE = (
    "a line (a key, a file name or a path) matches the key whose last part is the line's file stem: the file name "
    "without its extension, with '.' and whitespace as '_' (as ImageFolder keys), or else the file name up to its "
    "first '.' (as WebDataset keys); where several keys share that stem, the line's parent folder must also be the "
    "key's (n01440764/n01440764_10026.JPEG)"
)
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
    imported = _imported(out_dir)
    for name in sorted(set(wanted) & set(imported)):
        log.info("%s: keeping the imported key list %s.txt (from %s)", out_dir, name, imported[name]["source"])
        del wanted[name]
    # The lists an earlier call left here: written again with this seed (a 10percent.txt of seed 0 beside a
    # new 1percent.txt and a fractions.json of seed 5 was neither nested nor described).
    earlier = {name: k for name, k in _listed(out_dir, labelled, num_classes).items() if name not in wanted}
    lists: dict[str, list[str]] = {}
    summary: dict[str, dict[str, object]] = {}
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
    _write_summary(out_dir, seed, split, {**summary, **imported})
    return paths


def _write_summary(out_dir: Path, seed: int | None, split: str, entries: dict[str, dict[str, object]]) -> None:
    atomic_write_text(out_dir / FRACTIONS_JSON, json.dumps({"seed": seed, "split": split, "fractions": entries},
                                                          indent=1, sort_keys=True) + "\n")


def _summary(out_dir: Path) -> dict[str, object]:
    """A folder's ``fractions.json``; empty when it has none or cannot be read (it is rewritten whole)."""
    try:
        raw = json.loads((out_dir / FRACTIONS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _entries(out_dir: Path) -> dict[str, object]:
    """The ``fractions`` entries of a folder's ``fractions.json``."""
    entries = _summary(out_dir).get("fractions")
    return entries if isinstance(entries, dict) else {}


def _imported(out_dir: Path) -> dict[str, dict[str, object]]:
    """The imported lists a folder's ``fractions.json`` records (whose files are still there)."""
    return {str(n): e for n, e in _entries(out_dir).items()
            if isinstance(e, dict) and "source" in e and (out_dir / f"{n}.txt").is_file()}


def _stems(line: str) -> list[str]:
    base = line.replace("\\", "/").rstrip("/").rpartition("/")[2]
    stems = [sanitize_key(base.rpartition(".")[0] or base), base.partition(".")[0]]
    return [st for i, st in enumerate(stems) if st and st not in stems[:i]]


def _parent(text: str) -> str:
    return text.replace("\\", "/").rstrip("/").rpartition("/")[0].rpartition("/")[2]


def match_keys(lines: Sequence[str], keys: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """``(matched keys, unmatched lines, ambiguous lines)`` of a list's lines against a split's keys, by
    :data:`MATCH_RULE`; matched keys are in line order, each once."""
    by_stem: dict[str, list[str]] = {}
    for k in keys:
        by_stem.setdefault(k.rpartition("/")[2], []).append(k)
    matched: dict[str, None] = {}
    unmatched: list[str] = []
    ambiguous: list[str] = []
    for line in lines:
        cands = next((by_stem[st] for st in _stems(line) if st in by_stem), [])
        if len(cands) > 1:
            parent = _parent(line)
            cands = [k for k in cands if _parent(k) in (parent, sanitize_key(parent))] or cands
        if not cands:
            unmatched.append(line)
        elif len(cands) > 1:
            ambiguous.append(line)
        else:
            matched[cands[0]] = None
    return list(matched), unmatched, ambiguous


def import_key_list(
    data_root: str | Path,
    name: str,
    list_file: str | Path,
    *,
    split: str = "train",
    allow_missing: bool = False,
) -> Path:
    """Import ``list_file`` (keys, file names or paths, one a line) as the key list ``name`` of ``split``.

    ``name`` is a fraction name (``1percent``, ``10percent``, ``25perclass``): a stage finds the list by its
    fraction, ``finetune.label_fraction=0.01`` -> ``1percent.txt``. Lines are matched by :data:`MATCH_RULE`.
    Lines that match no key, or a key without a label, are an error stating the count and the first ten
    (``allow_missing``: a warning, and they are left out); a line that matches several keys is always an error.
    Returns the path of the written list; ``fractions.json`` records its source and counts per class.
    """
    if _LIST_NAME.match(name) is None:
        raise ValueError(f"key list name {name!r} must be a fraction name such as 1percent, 10percent or 25perclass "
                         "(finetune.label_fraction=0.01 reads 1percent.txt)")
    list_file = Path(list_file)
    try:
        lines = [ln.strip() for ln in list_file.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the list: {e}", path=list_file) from e
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise DataError("the list is empty", path=list_file)
    shards = open_split(data_root, split, verify="size")
    keys, unmatched, ambiguous = match_keys(lines, shards.keys)
    if ambiguous:
        raise DataError(f"{len(ambiguous)} lines match several keys of split {split!r} (give the class folder too), "
                        f"e.g. {ambiguous[:10]}", path=list_file)
    row = {k: i for i, k in enumerate(shards.keys)}
    unlabelled = [k for k in keys if shards.labels[row[k]] < 0]
    problems = ([f"{len(unmatched)} of {len(lines)} lines match no key of split {split!r} ({MATCH_RULE}); the "
                 f"first ten: {unmatched[:10]}"] if unmatched else []) + \
               ([f"{len(unlabelled)} lines name samples without a label, e.g. {unlabelled[:10]}"] if unlabelled else [])
    if problems and not allow_missing:
        raise DataError("; ".join(problems) + " (--allow-missing leaves them out)", path=list_file)
    for p in problems:
        log.warning("%s: %s; left out", list_file, p)
    keys = sorted(set(keys) - set(unlabelled))
    if not keys:
        raise DataError("no line of the list matches a labelled sample", path=list_file)
    counts = np.bincount(shards.labels[[row[k] for k in keys]], minlength=shards.manifest.num_classes)
    out_dir = Path(data_root) / split / FRACTIONS_DIR
    path = out_dir / f"{name}.txt"
    atomic_write_text(path, "".join(k + "\n" for k in keys))
    summary = _summary(out_dir)
    entries = summary.get("fractions")
    entries = {str(n): e for n, e in entries.items() if isinstance(e, dict)} if isinstance(entries, dict) else {}
    entries[name] = {"count": len(keys), "source": str(list_file.resolve()), "skipped": len(lines) - len(keys),
                     "class_counts": {c: int(n) for c, n in zip(shards.class_names, counts)}}
    seed = summary.get("seed")
    _write_summary(out_dir, seed if isinstance(seed, int) else None, split, entries)
    return path


_LIST_NAME = re.compile(r"^(?:(?P<pct>\d+(?:\.\d+)?)percent|(?P<k>\d+)perclass)$")


def _listed(out_dir: Path, labelled: int, num_classes: int) -> dict[str, int]:
    """``{name: samples per class}`` of the lists a folder's ``fractions.json`` names, for the shards as they
    are now (``10percent`` of 200 labels over 10 classes: 2); nothing when it has none or cannot be read (it
    is rewritten whole)."""
    entries = _entries(out_dir)
    out: dict[str, int] = {}
    for name, entry in entries.items():
        if isinstance(entry, dict) and "source" in entry:  # imported: kept as it is
            continue
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
