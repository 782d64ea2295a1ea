"""The sweep as ``simclr-status`` shows it: a row per task (stage x config point x seed), the report's row,
and the one watch loop that redraws them until everything has ended (``simclr-status --watch``, ``make demo``).

A row's state: the run folder's ``status.json`` wins once written (DONE / FAILED), else what SLURM or the local
pipeline says (:mod:`jobs.sweep.states`). Everything comes from the sweep folder (``manifest.json``,
``jobs.jsonl``, the run folders, read through :mod:`simclr.runfolder`) plus ONE ``sacct`` and ONE ``squeue``
call, so it works from any shell, long after submission, and answers in well under a second for hundreds of
points.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from jobs.sweep.manifest import JobRecord, latest_jobs, read_manifest
from jobs.sweep.queue import JobState
from jobs.sweep.states import ACTIVE, FINAL, State
from jobs.sweep.submit import current_records
from simclr.runfolder.layout import METRICS, RunState, locate_run_dir
from simclr.runfolder.metrics import read_metrics
from simclr.runfolder.read import read_progress, read_status

# The metric shown per stage, in order of preference: (split, name) as in metrics.jsonl.
KEY_METRICS: dict[str, list[tuple[str, str]]] = {
    "pretrain": [("val", "knn_top1"), ("train", "probe_top1"), ("train", "contrastive_acc"), ("train", "loss")],
    "finetune": [("test", "top1"), ("val", "top1"), ("train", "loss")],
    "linear_eval": [("test", "top1"), ("val", "top1"), ("train", "loss")],
    "supervised": [("test", "top1"), ("val", "top1"), ("train", "loss")],
    "distill": [("test", "top1"), ("val", "top1"), ("train", "agreement"), ("train", "distill_loss")],
}


@dataclass
class Row:
    """One task of the sweep as ``status`` shows it."""

    stage: str
    point: str
    seed: int
    state: str
    slurm_state: str
    reason: str  # why it is pending / how it failed (the run's own reason first)
    restarts: int
    step: int | None
    total_steps: int | None
    metric: str
    value: float | None
    job_id: str
    run_dir: str


def last_metric(run_dir: str | Path, stage: str, tail_bytes: int = 65536) -> tuple[str, float | None]:
    """The stage's key metric from the END of metrics.jsonl (reads at most ``tail_bytes``; tolerates a
    torn last line)."""
    try:
        series = read_metrics(Path(run_dir) / METRICS, tail_bytes=tail_bytes).series
    except OSError:
        return "", None
    for split, name in KEY_METRICS.get(stage, []):
        if (split, name) in series:
            return f"{split}/{name}", series[(split, name)].last
    return "", None


def _queue_reason(js: JobState | None, state: str) -> str:
    """SLURM's reason, where it explains the state: it keeps the last pending reason on finished jobs too
    ("COMPLETED (Dependency)")."""
    return js.reason if js is not None and state in (State.PENDING.value, State.CANCELLED.value) else ""


def task_row(task: Any, rec: JobRecord | None, js: JobState | None) -> Row:
    status = read_status(task.run_dir)
    progress = read_progress(task.run_dir) or {}
    slurm_state = js.state if js is not None else (State.NOT_SUBMITTED.value if rec is None else State.UNKNOWN.value)
    reason = _queue_reason(js, slurm_state)
    if js is not None and slurm_state in ("FAILED", "NODE_FAIL", "OUT_OF_MEMORY") and js.exit_code:
        reason = f"exit {js.exit_code}"
    if status is not None and status.get("state") == RunState.DONE.value:
        state = State.DONE.value
    elif status is not None and status.get("state") == RunState.FAILED.value:
        # A failed run that SLURM requeued or the user resumed is running again: show the live state.
        state = slurm_state if js is not None and js.active else "FAILED"
        if state == "FAILED":
            reason = str(status.get("reason") or reason)
    else:
        state = slurm_state
    metric, value = "", None
    final = (status or {}).get("final") or {}
    if state == "DONE" and isinstance(final, dict):
        for key in ("test/top1", "test/knn_top1", "val/top1", "val/knn_top1", "knn_top1"):
            if isinstance(final.get(key), (int, float)):
                metric, value = key, float(final[key])
                break
    if value is None:
        metric, value = last_metric(task.run_dir, task.stage)
    restarts = progress.get("restarts")
    step = (status or {}).get("step", progress.get("step"))
    total = (status or {}).get("total_steps", progress.get("total_steps"))
    return Row(
        stage=task.stage, point=task.point, seed=task.seed, state=state, slurm_state=slurm_state, reason=reason,
        restarts=int(restarts) if isinstance(restarts, int) else (js.requeues if js is not None else 0),
        step=step if isinstance(step, int) else None, total_steps=total if isinstance(total, int) else None,
        metric=metric, value=value, job_id=rec.job_id if rec else "-", run_dir=task.run_dir,
    )


def collect(sweep_dir: str | Path) -> tuple[list[Row], Row | None]:
    """Rows for every task of the manifest, and the report job's row (None if none was submitted)."""
    manifest = read_manifest(sweep_dir)
    records, states = current_records(sweep_dir)
    latest = latest_jobs(records)
    rows = []
    for t in manifest.tasks:
        rec = latest.get(t.key)
        # A copied or moved sweep folder: its run folders are here, not where the manifest says.
        here = replace(t, run_dir=str(locate_run_dir(t.run_dir, manifest.sweep_dir, sweep_dir)))
        rows.append(task_row(here, rec, states.get(rec.job_id) if rec else None))
    report_recs = [r for r in records if r.stage == "report"]
    report = None
    if report_recs:
        r = report_recs[-1]
        js = states.get(r.job_id)
        st = js.state if js else State.UNKNOWN.value
        reason = _queue_reason(js, st)
        report = Row("report", "report", 0, st, st, reason, js.requeues if js else 0, None, None,
                     "", None, r.job_id, str(Path(sweep_dir) / "report"))
    return rows, report


def summary(rows: list[Row], report: Row | None) -> str:
    c = Counter(r.state for r in rows)
    order = ["DONE", "RUNNING", "PENDING", "REQUEUED", "FAILED", "CANCELLED", "TIMEOUT"]
    parts = [f"{c[s]} {s.lower()}" for s in order if c.get(s)]
    parts += [f"{n} {s.lower()}" for s, n in sorted(c.items()) if s not in order]
    text = f"{len(rows)} tasks: " + ", ".join(parts)
    if report is not None:
        text += f" | report {report.state.lower()} ({report.job_id})"
    return text


def _fmt_progress(r: Row) -> str:
    if r.step is None:
        return "-"
    if r.total_steps:
        return f"{r.step}/{r.total_steps} ({100.0 * r.step / r.total_steps:.0f}%)"
    return str(r.step)


def render(rows: list[Row], report: Row | None, sweep_dir: str | Path, *, full_paths: bool = False) -> str:
    header = ["STAGE", "POINT", "SEED", "STATE", "RESTARTS", "PROGRESS", "METRIC", "JOB", "RUN"]
    table = [header]
    for r in rows + ([report] if report else []):
        state = r.state + (f" ({r.reason})" if r.reason and r.state not in ("DONE", "RUNNING") else "")
        metric = f"{r.metric}={r.value:.4g}" if r.value is not None else "-"
        run = r.run_dir if full_paths else os.path.relpath(r.run_dir, sweep_dir)
        table.append([r.stage, r.point, str(r.seed) if r.stage != "report" else "-", state[:40], str(r.restarts),
                      _fmt_progress(r), metric, r.job_id, run])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.append(summary(rows, report))
    return "\n".join(lines)


def finished(rows: list[Row], report: Row | None) -> bool:
    """Nothing left to run: every task ended, and the report too (if there is one)."""
    if any(r.state not in FINAL for r in rows):
        return False
    # Every state that will still run (SUSPENDED, REQUEUE_HOLD, ... too), and an unreadable queue, is not an end.
    return report is None or (report.state not in ACTIVE and report.state != State.QUERY_FAILED.value)


def watch(sweep_dir: str | Path, every_s: float = 5.0, *, title: str = "", out: TextIO | None = None,
          full_paths: bool = False) -> bool:
    """Redraw the sweep's status until every task (and the report) has ended; True when all are done.

    On a terminal the table is redrawn in place (ANSI); elsewhere (a batch log, a pipe) a line is printed each
    time the summary changes, and the whole table once at the end.
    """
    out = out if out is not None else sys.stdout
    tty = out.isatty()
    last = ""
    while True:
        rows, report = collect(sweep_dir)
        text = render(rows, report, sweep_dir, full_paths=full_paths)
        if tty:
            out.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S ") + f"{title or sweep_dir}\n{text}\n")
        else:
            line = summary(rows, report)
            if line != last:
                out.write(time.strftime("%H:%M:%S ") + line + "\n")
                last = line
        out.flush()
        if finished(rows, report):
            if not tty:
                out.write(text + "\n")
                out.flush()
            return all(r.state == State.DONE.value for r in rows)
        time.sleep(max(0.5, every_s))
