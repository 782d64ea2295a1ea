"""The run folder's and the sweep folder's layout: file names, stage and state names, folder naming and
hashing, and run folders relative to their sweep folder (docs/CONTRACTS.md "Run folder", "Sweep folder").

A sweep folder holds ``runs/<stage>/<point>-<hash8>-s<seed>/``: the readable name of a config point, eight hex
digits of the SHA-256 of its config (seeds share it) and the seed. ``manifest.json`` records each task's run
folder as an absolute path, written where the sweep ran; a folder copied off the cluster (``rsync``) or moved
keeps the layout but not those paths. Readers (the report, ``simclr-status``) therefore take a recorded run
folder relative to the recorded sweep folder and find it under the folder they were given. Writers
(``resume``) still refuse a moved folder: its run folders would be trained again at the new place.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINTS",
    "CONFIG_JSON",
    "CONFIG_YAML",
    "METRICS",
    "PROGRESS",
    "RUN_MARKERS",
    "STAGES",
    "STATUS",
    "RunState",
    "checkpoint_name",
    "checkpoint_step",
    "digest",
    "is_run_folder",
    "locate_run_dir",
    "parse_run_name",
    "point_name",
    "relative_run_dir",
    "run_folder_name",
]

CONFIG_JSON = "config.json"  # the resolved config; config.yaml holds the same, for people
CONFIG_YAML = "config.yaml"
METRICS = "metrics.jsonl"  # one JSON object per logged value, appended
PROGRESS = "progress.json"  # rewritten at each checkpoint
STATUS = "status.json"  # written LAST: without it the run has not finished
CHECKPOINTS = "checkpoints"  # ckpt-<step:08d>.pt

# The pipeline stages, in the order a sweep runs them; also the folder names under a sweep's runs/.
STAGES: tuple[str, ...] = ("pretrain", "finetune", "distill", "supervised", "linear_eval")
# Any of these files makes a folder a run folder (a killed run may have only some of them).
RUN_MARKERS: frozenset[str] = frozenset({CONFIG_JSON, CONFIG_YAML, METRICS, PROGRESS, STATUS})


class RunState(str, enum.Enum):
    """``status.json``'s ``state``: the run's end. A run without a status has not ended."""

    DONE = "done"
    FAILED = "failed"


_RUN_NAME = re.compile(r"^(?P<point>.+)-(?P<hash>[0-9a-f]{8})-s(?P<seed>\d+)$")
_SEED_SUFFIX = re.compile(r"-s\d+$")
_CKPT_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def digest(obj: Any) -> str:
    """Eight hex digits of the SHA-256 of ``obj`` as sorted JSON (non-JSON values by their ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_folder_name(point: str, hash8: str, seed: int) -> str:
    """``<point>-<hash8>-s<seed>``: the folder of one seed of one config point."""
    return f"{point}-{hash8}-s{seed}"


def point_name(run_folder: str | Path) -> str:
    """A run folder's name without its seed suffix: the same for every seed of its config point."""
    return _SEED_SUFFIX.sub("", Path(run_folder).name)


def parse_run_name(name: str) -> tuple[str | None, str | None, int | None]:
    """``<point>-<hash8>-s<seed>`` -> (point, hash8, seed); Nones when it does not match."""
    m = _RUN_NAME.match(name)
    if m is None:
        return None, None, None
    return m["point"], m["hash"], int(m["seed"])


def is_run_folder(names: set[str] | frozenset[str]) -> bool:
    """Whether a folder holding the file names ``names`` is a run folder."""
    return not RUN_MARKERS.isdisjoint(names)


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.pt"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint file name, or None when ``name`` is not one."""
    m = _CKPT_NAME.match(name)
    return int(m.group(1)) if m else None


def relative_run_dir(run_dir: str | Path, recorded_sweep_dir: str | Path) -> Path | None:
    """``run_dir`` relative to the sweep folder it was recorded under, or None when it lies outside it."""
    run, sweep = os.path.normpath(str(run_dir)), os.path.normpath(str(recorded_sweep_dir))
    if not os.path.isabs(run):
        return Path(run)
    try:
        rel = os.path.relpath(run, sweep)
    except ValueError:  # another drive (Windows laptops)
        return None
    return None if rel == ".." or rel.startswith(".." + os.sep) else Path(rel)


def locate_run_dir(run_dir: str | Path, recorded_sweep_dir: str | Path, sweep_dir: str | Path) -> Path:
    """Where a manifest's ``run_dir`` is now: under ``sweep_dir`` (the folder being read) at the same place
    relative to ``recorded_sweep_dir`` (the manifest's own ``sweep_dir``). A run folder recorded outside the
    sweep folder is returned as recorded."""
    rel = relative_run_dir(run_dir, recorded_sweep_dir)
    return Path(run_dir) if rel is None else Path(sweep_dir) / rel
