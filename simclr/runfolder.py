"""The sweep folder's layout, as its readers need it; torch-free (``jobs/`` and ``analysis/`` import it).

``manifest.json`` records each task's run folder as an absolute path, written where the sweep ran. A sweep folder
copied off the cluster (``rsync``) or moved keeps its layout, ``runs/<stage>/<run-folder>``, but not those
paths. Readers (the report, ``simclr-status``) therefore take a recorded run folder relative to the recorded
sweep folder and find it under the folder they were given (docs/CONTRACTS.md "Sweep folder"). Writers
(``resume``) still refuse a moved folder: its run folders would be trained again at the new place.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["relative_run_dir", "locate_run_dir"]


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
