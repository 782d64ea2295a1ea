"""Reading a run folder's records: the one reader of ``config.json``/``config.yaml``, ``status.json`` and
``progress.json`` (``metrics.jsonl`` has its own module, ``metrics.py``).

Plain files, no torch: the training loop (resume), ``jobs/`` (status, resume) and ``analysis/`` all read
through here. A record that is missing is None; one that is damaged is None too, and, when the caller passes
a ``warnings`` list, a line naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simclr.runfolder.layout import CONFIG_JSON, CONFIG_YAML, PROGRESS, STATUS, RunState

__all__ = ["is_done", "read_config", "read_json_object", "read_progress", "read_status"]


def read_json_object(path: str | Path, warnings: list[str] | None = None) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing, unreadable or not an object (with a
    warning in ``warnings`` for the last two)."""
    try:
        with open(path, "rb") as f:
            obj = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError
        if warnings is not None:
            warnings.append(f"{path}: unreadable JSON ({err}); ignored")
        return None
    if not isinstance(obj, dict):
        if warnings is not None:
            warnings.append(f"{path}: expected a JSON object, got {type(obj).__name__}; ignored")
        return None
    return obj


def read_status(run_dir: str | Path, warnings: list[str] | None = None) -> dict[str, Any] | None:
    """The run's ``status.json`` (written last), or None while it has not ended."""
    return read_json_object(Path(run_dir) / STATUS, warnings)


def read_progress(run_dir: str | Path, warnings: list[str] | None = None) -> dict[str, Any] | None:
    """The run's ``progress.json`` (step, total_steps, epoch, restarts), or None before its first checkpoint."""
    return read_json_object(Path(run_dir) / PROGRESS, warnings)


def is_done(run_dir: str | Path) -> bool:
    st = read_status(run_dir)
    return st is not None and st.get("state") == RunState.DONE.value


def read_config(run_dir: str | Path, warnings: list[str] | None = None,
                names: set[str] | None = None) -> dict[str, Any] | None:
    """The resolved config: ``config.json``, else ``config.yaml`` (the same content by the contract); None
    when neither is usable. ``names``: the folder's file names, when the caller listed it already."""
    folder = Path(run_dir)
    if names is None or CONFIG_JSON in names:
        cfg = read_json_object(folder / CONFIG_JSON, warnings)
        if cfg is not None:
            return cfg
    if names is not None and CONFIG_YAML not in names:
        return None
    path = folder / CONFIG_YAML
    try:
        import yaml  # only needed when config.json is missing or broken

        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except FileNotFoundError:
        return None
    except Exception as err:  # yaml.YAMLError, OSError, UnicodeDecodeError
        if warnings is not None:
            warnings.append(f"{path}: unreadable YAML ({err}); ignored")
        return None
    if isinstance(loaded, dict):
        return loaded
    if warnings is not None:
        warnings.append(f"{path}: expected a mapping; ignored")
    return None
