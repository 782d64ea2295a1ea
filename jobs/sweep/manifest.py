"""The sweep folder: ``manifest.json`` (the expanded grid), ``jobs.jsonl`` (every job id ever submitted)
and the run folders' own records, read back by ``status`` and ``resume`` from any shell, long after
``sweep`` returned.

Layout (docs/CONTRACTS.md "Sweep folder")::

    <sweep_dir>/manifest.json          rewritten atomically (tmp + fsync + rename) by each sweep/resume
    <sweep_dir>/jobs.jsonl             one JSON object per submitted task, appended, never rewritten
    <sweep_dir>/runs/<stage>/<name>-<hash8>-s<seed>/   the run folders (written by the stages)
    <sweep_dir>/slurm/<submission>/    submitit's pickles and logs, one folder per submission
    <sweep_dir>/report/                written by the report job

A task's identity is its run folder (``key`` = ``<stage>/<run-folder-name>``), never a job id: a task
requeued or resubmitted finds the same folder, and ``jobs.jsonl`` maps keys to the job ids that ran them.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simclr.atomic import atomic_write_text

MANIFEST = "manifest.json"
JOBS = "jobs.jsonl"
MANIFEST_VERSION = 1


@dataclass
class Task:
    """One stage config point of a sweep: a run folder and the config that fills it.

    ``parent`` is the key of the task it starts from (its pretrain run for a finetune, its teacher's
    finetune run for a distill), ``axes`` the point's values on the sweep's axes (inherited ones included),
    ``overrides`` the Hydra overrides that compose its ``config`` (``jobs.config.stage.compose(stage, overrides)``).
    """

    key: str
    stage: str
    point: str
    seed: int
    hash: str
    run_dir: str
    parent: str | None
    axes: dict[str, Any]
    overrides: list[str]
    config: dict[str, Any]

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Task":
        return Task(**{k: d[k] for k in Task.__dataclass_fields__})


@dataclass
class Manifest:
    """What ``sweep`` expanded: the definition it came from, the cluster profile, the tasks in order."""

    name: str
    sweep_dir: str
    definition: dict[str, Any]
    cluster: dict[str, Any]
    stages: list[str]
    tasks: list[Task]
    stage_resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    version: int = MANIFEST_VERSION

    def by_key(self) -> dict[str, Task]:
        return {t.key: t for t in self.tasks}

    def children(self) -> dict[str, list[str]]:
        """Parent key -> keys of the tasks starting from it."""
        out: dict[str, list[str]] = {}
        for t in self.tasks:
            if t.parent is not None:
                out.setdefault(t.parent, []).append(t.key)
        return out


def write_manifest(sweep_dir: Path, manifest: Manifest) -> None:
    now = time.time()
    manifest.created = manifest.created or now
    manifest.updated = now
    atomic_write_text(Path(sweep_dir) / MANIFEST, json.dumps(asdict(manifest), indent=1, sort_keys=False) + "\n")


def read_manifest(sweep_dir: str | Path) -> Manifest:
    """The sweep's manifest; ValueError naming the file when it is missing or not a manifest."""
    path = Path(sweep_dir) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path}: no manifest; is {sweep_dir} a sweep folder (made by simclr-sweep)?")
    try:
        d = json.loads(path.read_text())
        tasks = [Task.from_dict(t) for t in d.pop("tasks")]
        known = set(Manifest.__dataclass_fields__) - {"tasks"}
        return Manifest(tasks=tasks, **{k: v for k, v in d.items() if k in known})
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a valid sweep manifest ({e!r})") from None


SLURM, LOCAL = "slurm", "local"  # the executors a job record names


class JobId(str):
    """A job id as ``jobs.jsonl`` records it: SLURM's (``"123"``, an array task ``"123_4"``) or the local
    pipeline's (``"<pipeline pid>:<index>"``, ``"<pipeline pid>:report"``)."""

    @classmethod
    def local(cls, pipeline: str, index: int | str) -> JobId:
        return cls(f"{pipeline}:{index}")

    @property
    def is_local(self) -> bool:
        return ":" in self


@dataclass(frozen=True)
class JobRecord:
    """One line of ``jobs.jsonl``: a job submitted for a task (``key``) or for the report (``key`` None)."""

    job_id: JobId
    stage: str = ""
    key: str | None = None
    executor: str = SLURM
    time: float = 0.0
    submission: str = ""
    user: str | None = None  # who submitted it (a shared sweep folder: their queue is read too)
    run_dir: str | None = None
    log_dir: str | None = None
    array_job_id: str | None = None
    array_index: int | None = None
    dependency: str | None = None
    pipeline: str | None = None  # local executor: the pipeline's job id (its pid)
    pipeline_start: int | None = None  # ... and that process's start time (see pid_alive)

    def __post_init__(self) -> None:
        object.__setattr__(self, "job_id", JobId(self.job_id))

    def to_json(self) -> dict[str, Any]:
        """The record as written: every field that is set, and ``key`` always (None for the report)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k == "key"}

    @staticmethod
    def from_json(d: Any) -> JobRecord | None:
        """A record read back (older lines may lack fields); None when it is not a job record."""
        if not isinstance(d, dict) or "job_id" not in d:
            return None

        def text(name: str) -> str | None:
            v = d.get(name)
            return None if v is None else str(v)

        index = d.get("array_index")
        when = d.get("time")
        return JobRecord(
            job_id=JobId(str(d["job_id"])), stage=str(d.get("stage", "")),
            key=d["key"] if isinstance(d.get("key"), str) else None, executor=str(d.get("executor", SLURM)),
            time=float(when) if isinstance(when, (int, float)) else 0.0, submission=str(d.get("submission", "")),
            user=text("user"), run_dir=text("run_dir"), log_dir=text("log_dir"), array_job_id=text("array_job_id"),
            array_index=index if isinstance(index, int) and not isinstance(index, bool) else None,
            dependency=text("dependency"), pipeline=text("pipeline"),
            pipeline_start=recorded_start(d.get("pipeline_start")),
        )


def append_jobs(sweep_dir: str | Path, records: list[JobRecord]) -> None:
    """Append job records to ``jobs.jsonl`` in one write, flushed to disk (never rewritten)."""
    if not records:
        return
    text = "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records)
    path = Path(sweep_dir) / JOBS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as f:
        # Locked so that the torn-line check below and the write are one step for concurrent appenders.
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            # A writer killed mid-append leaves a last line without its newline: appending right after it
            # would glue this append's first record to the torn one, and read_jobs would skip both.
            size = f.seek(0, os.SEEK_END)
            if size > 0:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    text = "\n" + text
            f.write(text.encode())  # "a" mode: the write goes to the end whatever the read position
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_jobs(sweep_dir: str | Path) -> list[JobRecord]:
    """Every job record, oldest first; a torn last line (a killed writer) is skipped."""
    path = Path(sweep_dir) / JOBS
    if not path.is_file():
        return []
    out: list[JobRecord] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = JobRecord.from_json(json.loads(line))
        except json.JSONDecodeError:
            continue
        if rec is not None:
            out.append(rec)
    return out


def _proc_stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (index 0 = field 3, the state), or None when
    the process is not there (or there is no /proc). Field 2 is "(comm)", and comm may itself hold ")",
    spaces or "(": the fields after it start after the LAST ")". Bytes: comm need not be UTF-8."""
    if pid <= 0:
        return None
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    _, paren, rest = data.rpartition(b")")
    return rest.split() if paren else None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22), or None when it is
    not there. A pid plus its start time names one process: a pid alone may have been reused by an
    unrelated process since it was recorded."""
    fields = _proc_stat(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not reaped, does not); ``start`` (its recorded
    :func:`process_start`) also requires it to be the same process, not one that got the pid later. Without
    a start time (older records), the pid alone."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it runs (and the start time below tells whether it is ours)
    fields = _proc_stat(pid)
    if fields is None:  # no /proc: the signal check is all there is
        return True
    if fields[:1] == [b"Z"]:
        return False
    if start is not None and len(fields) >= 20 and fields[19].isdigit() and int(fields[19]) != start:
        return False
    return True


def recorded_start(value: Any) -> int | None:
    """A start time read back from a JSON record (None when absent or not an int: an older record)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def latest_jobs(records: list[JobRecord]) -> dict[str, JobRecord]:
    """Task key -> its most recent job record (a resubmission supersedes the earlier job)."""
    return {r.key: r for r in records if r.key is not None}
