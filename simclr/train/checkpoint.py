"""Checkpoints: atomic saves that keep the last K, and a loader that skips a damaged latest one.

A checkpoint is a dict of tensors and plain values (loads with ``weights_only=True``):
``model``, ``optimizer``, ``step``, ``epoch``, ``batch_in_epoch``, ``rng``, ``config``, ``code_version``,
``metrics_offset`` and whatever extra state a stage adds (docs/CONTRACTS.md).
"""

from __future__ import annotations

import io
import logging
import random
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simclr.atomic import atomic_write_bytes
from simclr.runfolder.layout import checkpoint_name, checkpoint_step

log = logging.getLogger(__name__)


class CheckpointMismatch(ValueError):
    """A checkpoint that loads but belongs to another config: it lacks an entry this run needs, or holds one
    this run does not know. The message names the entry."""


def check_entries(state: Mapping[str, Any], path: Path, needed: Iterable[str], known: Iterable[str]) -> None:
    """Raise :class:`CheckpointMismatch` unless ``state``'s entries are ``known`` plus exactly ``needed``."""
    needed, known = set(needed), set(known)
    missing = sorted(needed - set(state))
    if missing:
        raise CheckpointMismatch(f"checkpoint {path} has no {', '.join(map(repr, missing))} entry, which this run "
                                 "needs: it was written by a run without it (another config)")
    unknown = sorted(set(state) - needed - known)
    if unknown:
        raise CheckpointMismatch(f"checkpoint {path} holds {', '.join(map(repr, unknown))}, which this run does not "
                                 "use: it was written by a run with it (another config)")


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / checkpoint_name(step)


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first (by the step in the name, never by mtime)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(step, p) for p in folder.iterdir() if (step := checkpoint_step(p.name)) is not None]
    return [p for _, p in sorted(found)]


def save_checkpoint(folder: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as ``ckpt-<step>.pt`` atomically, then delete all but the newest ``keep``.

    A checkpoint of a LATER step than ``step`` can only be one the run resumed past (it did not load):
    it is deleted first, so that it never counts among the ``keep`` newest and pushes the good ones out.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    path = checkpoint_path(folder, step)
    atomic_write_bytes(path, buf.getvalue())
    for later in list_checkpoints(folder):
        if _step_of(later) > step:
            log.warning("deleting %s: a later step than this run's (it resumed from an earlier checkpoint)", later)
            later.unlink(missing_ok=True)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _step_of(path: Path) -> int:
    step = checkpoint_step(path.name)
    return -1 if step is None else step


def load_latest(folder: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
    """Load the newest checkpoint that loads; a damaged one is skipped for the previous one, loudly."""
    for path in reversed(list_checkpoints(folder)):
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any load failure means "damaged": fall back, loudly
            log.warning("checkpoint %s does not load (%s: %s); trying the previous one", path, type(e).__name__, e)
            continue
        if not isinstance(state, dict) or "step" not in state:
            log.warning("checkpoint %s has no 'step': skipped", path)
            continue
        return state, path
    return None


def rng_state() -> dict[str, Any]:
    """Every RNG the loop touches, as checkpointable values (numpy/python states as tensors/lists)."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(_py_state_to_plain(random.getstate())),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (its tensors may have been loaded onto any device)."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].cpu().numpy().astype(np.uint32), *n[2:]))
    random.setstate(_plain_to_py_state(state["python"]))


def _py_state_to_plain(s: tuple[Any, ...]) -> tuple[Any, ...]:
    version, internal, gauss = s
    return (version, list(internal), gauss)


def _plain_to_py_state(s: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = s
    return (version, tuple(internal), gauss)


def code_version() -> str:
    """The git commit of the code that wrote a checkpoint ('unknown' outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
