"""The run folder: config, metrics.jsonl, progress, checkpoints/, and status.json written last.

See docs/CONTRACTS.md. Everything here is plain files so that ``analysis/`` and ``jobs/cli/status`` can read
a run without importing torch.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from simclr.atomic import atomic_write_json, atomic_write_text
from simclr.runfolder.layout import CHECKPOINTS, CONFIG_JSON, CONFIG_YAML, METRICS, PROGRESS, STATUS, RunState
from simclr.runfolder.read import read_json_object, read_progress, read_status


class RunFolder:
    """One run's folder. Only global rank 0 writes; other ranks may construct it to read."""

    def __init__(self, path: str | Path, *, stage: str = "", writer: bool = True) -> None:
        self.path = Path(path)
        self.stage = stage
        self.writer = writer
        self._metrics_file: Any = None

    # ---- paths -------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def status_path(self) -> Path:
        return self.path / STATUS

    @property
    def progress_path(self) -> Path:
        return self.path / PROGRESS

    # ---- config ------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        """Save the resolved config as YAML and JSON (atomic; rewritten identically on resume)."""
        if not self.writer:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / CONFIG_YAML, yaml.safe_dump(config, sort_keys=True))
        atomic_write_json(self.path / CONFIG_JSON, config)

    def read_config(self) -> dict[str, Any]:
        """The saved config; FileNotFoundError when there is none, ValueError when it is damaged."""
        problems: list[str] = []
        config = read_json_object(self.path / CONFIG_JSON, problems)
        if config is None:
            if problems:
                raise ValueError(problems[0])
            raise FileNotFoundError(self.path / CONFIG_JSON)
        return config

    # ---- status ------------------------------------------------------------------------------
    def read_status(self) -> dict[str, Any] | None:
        """The final status record, or None when the run has not finished."""
        return read_status(self.path)

    def is_done(self) -> bool:
        s = self.read_status()
        return s is not None and s.get("state") == RunState.DONE.value

    def clear_status(self) -> None:
        """A (re)started run is not finished: drop a previous failed status."""
        if self.writer:
            try:
                self.status_path.unlink()
            except FileNotFoundError:
                pass

    def write_status(self, state: str, reason: str | None = None, **fields: Any) -> dict[str, Any]:
        record = {"state": state, "reason": reason, "time": time.time(), **fields}
        if self.writer:
            self.close_metrics()
            atomic_write_json(self.status_path, record)
        return record

    def write_progress(self, **fields: Any) -> None:
        if self.writer:
            atomic_write_json(self.progress_path, {**fields, "time": time.time()})

    def read_progress(self) -> dict[str, Any]:
        return read_progress(self.path) or {}

    # ---- metrics -----------------------------------------------------------------------------
    def metrics_offset(self) -> int:
        """Bytes of metrics.jsonl that are complete (flushed and on disk, as the checkpoint that stores the
        offset will be)."""
        if self._metrics_file is not None:
            self._metrics_file.flush()
            os.fsync(self._metrics_file.fileno())
        try:
            return self.metrics_path.stat().st_size
        except FileNotFoundError:
            return 0

    def truncate_metrics(self, offset: int) -> None:
        """On resume: drop lines logged after the checkpoint, so they are not logged twice."""
        if not self.writer:
            return
        self.close_metrics()
        if self.metrics_path.exists():
            with open(self.metrics_path, "r+b") as f:
                size = os.fstat(f.fileno()).st_size
                if size < offset:
                    # The file lost its tail (a node crash): never truncate past the end (NUL padding), and
                    # cut back to its last whole line, or the next line would be glued to a torn one.
                    f.seek(max(0, size - (1 << 20)))
                    tail = f.read()
                    offset = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
                f.truncate(offset)

    def log(self, *, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        """Append one JSON line per metric (docs/CONTRACTS.md)."""
        if not self.writer or not values:
            return
        if self._metrics_file is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._metrics_file = open(self.metrics_path, "a", buffering=1)
        now = time.time()
        lines = [
            json.dumps(
                {"step": step, "epoch": epoch, "stage": self.stage, "split": split, "name": k, "value": float(v), "time": now}
            )
            for k, v in values.items()
        ]
        self._metrics_file.write("\n".join(lines) + "\n")

    def close_metrics(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.flush()
            os.fsync(self._metrics_file.fileno())
            self._metrics_file.close()
            self._metrics_file = None
