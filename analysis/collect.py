"""Collect every run folder under one or more roots into one runs table (a pandas DataFrame).

A root may be a sweep folder (``runs/<stage>/<run-folder>``, docs/CONTRACTS.md "Sweep folder"; one copied or
moved off the cluster reads the same: its manifest's run folders are found under it),
several sweeps, a single run folder, or any tree that holds run folders. A folder is a run folder
when it holds any of ``RUN_MARKERS`` (a killed run may lack some); we never descend into one.

Columns of ``Collection.runs`` (one row per run folder):

- identity: ``run`` (folder name), ``path``, ``sweep``, ``point``, ``config_id`` (the hash8 of the
  folder name: one config point), ``stage``, ``seed``, ``parent``
- axes: ``depth``, ``width``, ``sk_ratio``, ``cifar_stem``, ``num_proj_layers``, ``proj_out_dim``,
  ``ft_proj_selector``, ``label_fraction``, ``memory_size`` (SimCLRv2's memory of the pretraining run the
  backbone came from: its own for pretraining, the parent's for fine-tuning and linear eval, the teacher's
  pretraining for distillation; NaN for supervised and when that run is not collected); distill: ``teacher_run``, ``teacher_ref`` and
  ``teacher_<axis>`` for the teacher's model, ``teacher_ft_proj_selector``,
  ``teacher_label_fraction``, ``teacher_state``, ``teacher_top1``, ``teacher_path``
- state: ``state`` (done / failed / running), ``reason``, ``has_config``, ``usable`` (done, with a
  config and a known stage, not a duplicate: only these enter the numbers), ``duplicate_of``
- progress and cost: ``step``, ``total_steps``, ``progress``, ``epoch``, ``restarts``,
  ``wall_time_s``, ``world_size``, ``device``, ``device_hours``, ``gpu_hours``, ``params``,
  ``n_ckpts``, ``last_ckpt_step``, ``n_metric_lines``
- budget and convergence (docs/CONTRACTS.md "Convergence"): ``batch_size``, ``epochs_done``,
  ``cut_by_max_steps`` (``train.max_steps`` ended the run), ``images_seen``,
  ``labelled_images_seen``, ``pretrain_steps`` (of the pretraining run the backbone came from), ``converged``
  (``true`` / ``false`` / ``unknown``), ``convergence_note``
- results: ``top1``, ``top5`` (test, percent) and ``top1_source`` (``final`` or ``metrics``);
  ``final:<key>`` for each number in status.json's ``final``; ``last:<split>/<name>`` and
  ``best:<split>/<name>`` for each metrics.jsonl series (best = max, or min for losses).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.runfolder import MODEL_AXES, RunRead, read_run
from simclr.runfolder.layout import is_run_folder, locate_run_dir

__all__ = ["Collection", "collect", "find_run_folders", "BASE_COLUMNS"]

BASE_COLUMNS: tuple[str, ...] = (
    "run", "stage", "state", "reason", "usable", "sweep", "point", "config_id", "seed",
    *MODEL_AXES, "ft_proj_selector", "label_fraction", "memory_size",
    "teacher_run", *(f"teacher_{a}" for a in MODEL_AXES), "teacher_ft_proj_selector",
    "teacher_label_fraction", "teacher_state", "teacher_top1",
    "top1", "top5", "top1_source", "top5_source", "params", "step", "total_steps", "progress", "epoch", "restarts",
    "wall_time_s", "world_size", "device", "device_hours", "gpu_hours",
    "batch_size", "epochs_done", "cut_by_max_steps", "images_seen", "labelled_images_seen", "pretrain_steps", "converged",
    "convergence_note",
    "n_ckpts", "last_ckpt_step", "n_metric_lines", "has_config", "duplicate_of", "parent",
    "teacher_ref", "teacher_path", "path",
)
_SKIP_DIRS = frozenset({"__pycache__", "checkpoints", "report"})


@dataclass
class Collection:
    """Everything read from the run folders.

    ``runs``: one row per run folder (columns in the module docstring).
    ``curves``: long table of training curves, columns ``run`` (= ``runs.path``), ``split``,
    ``name``, ``step``, ``value``; at most ``max_curve_points`` points per run and series.
    ``warnings``: one line per problem, each naming the file.
    """

    runs: pd.DataFrame
    curves: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)


def find_run_folders(root: Path, exclude: Iterable[Path] = (),
                     warnings: list[str] | None = None) -> list[tuple[Path, set[str]]]:
    """Every run folder under ``root`` (``root`` itself included), sorted, with its file names.

    ``exclude``: folders not to enter (e.g. the report's own output folder). Folders named
    ``report``, ``checkpoints``, ``__pycache__`` or starting with a dot are skipped too. A folder
    that cannot be listed is skipped with a line in ``warnings``.
    """
    excluded = {os.path.realpath(p) for p in exclude}
    found: list[tuple[Path, set[str]]] = []
    stack = [str(root)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as err:
            if warnings is not None:
                warnings.append(f"{d}: cannot list ({err}); skipped")
            continue
        names = {e.name for e in entries}
        if is_run_folder(names):
            found.append((Path(d), names))
            continue
        for e in entries:
            if e.name.startswith(".") or e.name in _SKIP_DIRS:
                continue
            try:
                is_dir = e.is_dir()
            except OSError:
                continue
            if is_dir and os.path.realpath(e.path) not in excluded:
                stack.append(e.path)
    found.sort(key=lambda item: str(item[0]))
    return found


def _read_one(args: tuple[Path, set[str], int]) -> RunRead:
    folder, names, max_points = args
    try:
        return read_run(folder, max_curve_points=max_points, names=names)
    except Exception as err:  # a reader bug on one odd folder must not sink the whole report
        return RunRead(row={"run": folder.name, "path": str(folder), "state": "running", "has_config": False,
                            "reason": f"could not be read: {type(err).__name__}: {err}"},
                       warnings=[f"{folder}: could not be read ({type(err).__name__}: {err}); listed only"])


def _curves_frame(reads: Sequence[RunRead]) -> pd.DataFrame:
    """Concatenate every run's curves into one long frame with categorical run/split/name."""
    runs_codes, split_codes, name_codes, steps, values = [], [], [], [], []
    split_cats: dict[str, int] = {}
    name_cats: dict[str, int] = {}
    for i, rr in enumerate(reads):
        for (split, name), (s, v) in rr.curves.items():
            n = s.size
            runs_codes.append(np.full(n, i, dtype=np.int32))
            split_codes.append(np.full(n, split_cats.setdefault(split, len(split_cats)), dtype=np.int16))
            name_codes.append(np.full(n, name_cats.setdefault(name, len(name_cats)), dtype=np.int16))
            steps.append(s)
            values.append(v)
    if not steps:
        return pd.DataFrame({"run": pd.Series([], dtype=object), "split": pd.Series([], dtype=object),
                             "name": pd.Series([], dtype=object), "step": np.array([], dtype=np.int64),
                             "value": np.array([], dtype=np.float64)})
    paths = [rr.row["path"] for rr in reads]
    return pd.DataFrame({
        "run": pd.Categorical.from_codes(np.concatenate(runs_codes), categories=paths),
        "split": pd.Categorical.from_codes(np.concatenate(split_codes), categories=list(split_cats)),
        "name": pd.Categorical.from_codes(np.concatenate(name_codes), categories=list(name_cats)),
        "step": np.concatenate(steps).astype(np.int64, copy=False),
        "value": np.concatenate(values),
    })


def _run_finder(runs: pd.DataFrame) -> Callable[[str, Path], Any]:
    """``find(ref, own)``: the row index of the run ``ref`` names (a path, absolute or relative to the folder of
    the run ``own``, else a run folder name: of several runs of that name, the one in ``own``'s sweep), or None."""
    by_path = {os.path.realpath(p): i for i, p in zip(runs.index, runs["path"])}
    by_name: dict[str, list[Any]] = {}
    for i, name in zip(runs.index, runs["run"]):
        by_name.setdefault(str(name), []).append(i)

    def find(ref: str, own: Path) -> Any:
        cand = by_path.get(os.path.realpath(ref)) if os.path.isabs(ref) else None
        if cand is None:
            cand = by_path.get(os.path.realpath(own.parent / ref))
        if cand is None:
            matches = by_name.get(Path(ref).name, [])
            if len(matches) > 1:  # same run name in several sweeps: prefer the one next to ``own``
                same_tree = [j for j in matches if Path(runs.at[j, "path"]).parent.parent == own.parent.parent]
                matches = same_tree or matches
            cand = matches[0] if matches else None
        return cand

    return find


def _resolve_teachers(runs: pd.DataFrame, warnings: list[str]) -> None:
    """Fill the teacher columns of distill runs from the teacher's own run row (in place)."""
    for col in ("teacher_ft_proj_selector", "teacher_label_fraction", "teacher_top1"):
        runs[col] = math.nan
    runs["teacher_state"] = None
    runs["teacher_path"] = None
    if "teacher_ref" not in runs or runs["teacher_ref"].isna().all():
        return
    find = _run_finder(runs)
    for i in runs.index[runs["teacher_ref"].notna()]:
        ref = runs.at[i, "teacher_ref"]
        own = Path(runs.at[i, "path"])
        cand = find(ref, own)
        if cand is None:
            warnings.append(f"{own / 'config.json'}: teacher run {ref!r} not found among the collected runs; "
                            "teacher top-1 unknown")
            continue
        runs.at[i, "teacher_path"] = runs.at[cand, "path"]
        runs.at[i, "teacher_state"] = runs.at[cand, "state"]
        runs.at[i, "teacher_top1"] = runs.at[cand, "top1"] if runs.at[cand, "state"] == "done" else math.nan
        runs.at[i, "teacher_ft_proj_selector"] = runs.at[cand, "ft_proj_selector"]
        runs.at[i, "teacher_label_fraction"] = runs.at[cand, "label_fraction"]
        for axis in MODEL_AXES:  # the teacher's own config
            col = f"teacher_{axis}"
            if pd.isna(runs.at[i, col]):
                runs.at[i, col] = runs.at[cand, axis]


def _pretrain_steps(runs: pd.DataFrame) -> None:
    """``pretrain_steps``: the optimizer steps of the pretraining run a row's backbone came from (its own for a
    pretraining run, its parent's for a fine-tune or linear eval, its teacher's for a distillation, 0 for a
    supervised baseline); NaN when that run is not among the collected ones. ``memory_size`` of the other
    stages from the same run (NaN for supervised or when it is not collected)."""
    find = _run_finder(runs)
    steps, memory = [], []
    for i in runs.index:
        j = i
        for _ in range(2):  # distill -> finetune -> pretrain at most
            parent = runs.at[j, "parent"]
            if runs.at[j, "stage"] in ("pretrain", "supervised") or not isinstance(parent, str):
                break
            j = find(parent, Path(runs.at[j, "path"]))
            if j is None:
                break
        if runs.at[i, "stage"] == "supervised":
            steps.append(0.0)
            memory.append(math.nan)
        elif j is None or runs.at[j, "stage"] != "pretrain":
            steps.append(math.nan)
            memory.append(math.nan)
        else:
            v = pd.to_numeric(runs.at[j, "step"], errors="coerce")
            steps.append(float(v) if pd.notna(v) else math.nan)
            m = pd.to_numeric(runs.at[j, "memory_size"], errors="coerce")
            memory.append(float(m) if pd.notna(m) else math.nan)
    runs["pretrain_steps"] = steps
    runs["memory_size"] = memory


def _mark_usable(runs: pd.DataFrame, warnings: list[str]) -> None:
    """``usable``: done, with a config and stage, and the first of any duplicate (stage, config, seed)."""
    runs["duplicate_of"] = None
    ok = (runs["state"] == "done") & runs["has_config"].astype(bool) & runs["stage"].notna()
    keyed = runs[ok & runs["config_id"].notna() & runs["seed"].notna()]
    dup = keyed.duplicated(subset=["stage", "config_id", "seed"], keep="first")
    if dup.any():
        first = keyed[~dup].set_index(["stage", "config_id", "seed"])["path"]
        for i in keyed.index[dup]:
            orig = first.loc[(runs.at[i, "stage"], runs.at[i, "config_id"], runs.at[i, "seed"])]
            runs.at[i, "duplicate_of"] = orig
            warnings.append(f"{runs.at[i, 'path']}: same stage, config point and seed as {orig}; "
                            "counted once (the first)")
        ok &= runs["duplicate_of"].isna()
    runs["usable"] = ok


def _check_sweeps(runs: pd.DataFrame, warnings: list[str]) -> None:
    """Warn when runs of several sweeps are mixed, naming one config file per sweep."""
    sweeps = runs.loc[runs["has_config"].astype(bool), ["sweep", "path"]].fillna({"sweep": "(none)"})
    if sweeps["sweep"].nunique() > 1:
        parts = [f"{name!r}: {len(g)} runs (e.g. {Path(g['path'].iloc[0]) / 'config.json'})"
                 for name, g in sweeps.groupby("sweep", sort=True)]
        warnings.append("runs of several sweeps in one report: " + "; ".join(parts) +
                        ". Seeds are pooled only within one config point (same hash).")


def _manifest_runs(root: Path, warnings: list[str]) -> set[str] | None:
    """The run folders a sweep folder's ``manifest.json`` lists (its current grid), or None when ``root`` is not
    a sweep folder. A sweep rerun with a changed grid keeps the old run folders; they are not this sweep's
    numbers. An unreadable manifest means every folder counts, with a warning."""
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        recorded = manifest.get("sweep_dir") or str(root)
        # Run folders are recorded absolute, where the sweep ran; a copied sweep folder holds them under itself.
        return {os.path.realpath(locate_run_dir(t["run_dir"], recorded, root)) for t in manifest["tasks"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        warnings.append(f"{path}: unreadable ({type(err).__name__}: {err}); every run folder under it collected")
        return None


def collect(roots: str | Path | Sequence[str | Path], *, workers: int = 1, max_curve_points: int = 200,
            exclude: Iterable[str | Path] = ()) -> Collection:
    """Read every run folder under ``roots`` into a :class:`Collection`.

    ``workers`` > 1 reads folders in that many processes (useful on a login node with cores to
    spare; the per-folder work is already a single C-level JSON parse, so 1 is often enough).
    A root that does not exist raises ``FileNotFoundError`` naming it.
    """
    root_list = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    for r in root_list:
        if not r.is_dir():
            raise FileNotFoundError(f"run tree {str(r)!r} does not exist or is not a folder")
    excl = [Path(e) for e in exclude]
    warnings: list[str] = []
    folders: list[tuple[Path, set[str]]] = []
    seen: set[str] = set()
    left_out: dict[str, int] = {}
    for r in root_list:
        listed = _manifest_runs(r, warnings)
        for folder, names in find_run_folders(r, excl, warnings):
            key = os.path.realpath(folder)
            if listed is not None and key not in listed:
                left_out[str(r)] = left_out.get(str(r), 0) + 1
                continue
            if key not in seen:  # overlapping roots
                seen.add(key)
                folders.append((folder, names))
    for root_name, n in left_out.items():
        warnings.append(f"{root_name}: {n} run folder(s) not in its manifest.json (an earlier grid of the sweep) left out")
    tasks = [(f, n, max_curve_points) for f, n in folders]
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            reads = list(pool.map(_read_one, tasks, chunksize=max(1, len(tasks) // (4 * workers))))
    else:
        reads = [_read_one(t) for t in tasks]

    for rr in reads:
        warnings.extend(rr.warnings)
    runs = pd.DataFrame.from_records([rr.row for rr in reads]) if reads else pd.DataFrame()
    for col in BASE_COLUMNS:
        if col not in runs:
            runs[col] = None if col in ("reason", "stage", "sweep", "point", "config_id", "device",
                                        "teacher_run", "teacher_ref", "parent", "path", "run",
                                        "top1_source", "top5_source", "convergence_note") else (
                                        "unknown" if col == "converged" else math.nan)
    runs["has_config"] = runs["has_config"].fillna(False).astype(bool)
    _resolve_teachers(runs, warnings)
    _pretrain_steps(runs)
    _mark_usable(runs, warnings)
    _check_sweeps(runs, warnings)
    metric_cols = sorted(c for c in runs.columns if c not in BASE_COLUMNS)
    runs = runs[list(BASE_COLUMNS) + metric_cols]
    return Collection(runs=runs, curves=_curves_frame(reads), warnings=warnings, roots=root_list)
