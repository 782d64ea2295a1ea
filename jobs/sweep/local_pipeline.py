"""The local executor: a whole sweep in one background pipeline process (no SLURM).

:class:`PipelineTask` runs a sweep's tasks on this machine in dependency order, each in a child process
(``python -m jobs.sweep.local_pipeline run SWEEP_DIR KEY``) that runs the task's config in the same
:class:`~jobs.sweep.launch.StageTask` a SLURM task runs in, then the report. This module owns the pipeline's
state file (``<sweep_dir>/local/<job_id>.json``): it writes it, and :func:`local_states` is the one reader
``status``, ``resume`` and ``cancel`` use.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jobs.sweep.entry import preempt_signal
from jobs.sweep.launch import DEFAULT_RUNNER, ReportTask, StageTask, _hand_over
from jobs.sweep.manifest import (
    LOCAL,
    JobRecord,
    latest_jobs,
    pid_alive,
    process_start,
    read_jobs,
    read_manifest,
    recorded_start,
)
from jobs.sweep.queue import JobState
from jobs.sweep.states import State
from simclr.atomic import atomic_write_text
from simclr.runfolder.read import is_done, read_json_object

# A task's state in a pipeline, named as SLURM names it (jobs.sweep.states): status shows one vocabulary.
PIPE_PENDING, PIPE_RUNNING, PIPE_COMPLETED, PIPE_FAILED, PIPE_CANCELLED = (
    State.PENDING.value, State.RUNNING.value, State.COMPLETED.value, State.FAILED.value, State.CANCELLED.value,
)


def pipeline_state_path(sweep_dir: str | Path, job_id: str) -> Path:
    return Path(sweep_dir) / "local" / f"{job_id}.json"


def read_state(sweep_dir: str | Path, job_id: str) -> dict[str, Any]:
    """Pipeline ``job_id``'s state file; empty when it has not written one (or it is unreadable)."""
    return read_json_object(pipeline_state_path(sweep_dir, job_id)) or {}


class PipelineTask:
    """Runs ``keys`` of a sweep's manifest on this machine in dependency order, ``parallelism`` at once.

    Each task runs as ``python -m jobs.sweep.local_pipeline run SWEEP_DIR KEY`` (a fresh interpreter: no state leaks
    between runs, and a crash fails one task). A task whose parent failed is CANCELLED, like SLURM's
    ``afterok`` with ``--kill-on-invalid-dep``. The report runs last whatever happened (``afterany``).
    Progress goes to ``<sweep_dir>/local/<job_id>.json`` for ``status``. On the preemption/time-out
    signal the running children get it too (they checkpoint and exit), then submitit requeues this
    pipeline; finished runs are skipped when it starts again.
    """

    def __init__(self, sweep_dir: str, keys: list[str], parallelism: int = 1, report: bool = True,
                 runner: str = DEFAULT_RUNNER) -> None:
        self.sweep_dir = sweep_dir
        self.keys = list(keys)
        self.parallelism = max(1, int(parallelism))
        self.report = report
        self.runner = runner

    def __repr__(self) -> str:
        return f"PipelineTask({self.sweep_dir}, {len(self.keys)} tasks)"

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(PipelineTask(self.sweep_dir, self.keys, self.parallelism,
                                                               self.report, self.runner))

    def __call__(self) -> dict[str, str]:
        from simclr.train import preempt

        job_id = os.environ.get("SUBMITIT_LOCAL_JOB_ID", str(os.getpid()))
        tasks = read_manifest(self.sweep_dir).by_key()
        missing = [k for k in self.keys if k not in tasks]
        if missing:
            raise ValueError(f"{self.sweep_dir}: tasks {missing} are not in the manifest")
        state_path = pipeline_state_path(self.sweep_dir, job_id)
        old = read_state(self.sweep_dir, job_id).get("tasks", {})
        states: dict[str, dict[str, Any]] = {
            k: {"state": PIPE_PENDING, "restarts": int(old.get(k, {}).get("restarts", 0))} for k in self.keys
        }
        for k in self.keys:
            if is_done(tasks[k].run_dir):
                states[k]["state"] = PIPE_COMPLETED
        running: dict[str, subprocess.Popen[bytes]] = {}

        # With the pid, its start time names this process: a pid reused after an unclean death is not taken
        # for a live pipeline (resume would skip its tasks; cancel would signal a stranger).
        pid_start = process_start(os.getpid())

        def save(report_state: str = PIPE_PENDING) -> None:
            atomic_write_text(state_path, json.dumps(
                {"job_id": job_id, "pid": os.getpid(), "pid_start": pid_start, "time": time.time(), "tasks": states,
                 "report": report_state, "children": {k: p.pid for k, p in running.items()}}, indent=1))

        sig = preempt_signal()
        preempt.clear()
        previous = preempt.install([sig])
        # Python leaves SIGINT ignored when it started ignored (a sweep submitted from `cmd &` or nohup):
        # then simclr-cancel's SIGINT would do nothing and the pipeline would run on to the end.
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            save()
            while True:
                for k, proc in list(running.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    del running[k]
                    states[k]["state"] = PIPE_COMPLETED if is_done(tasks[k].run_dir) else PIPE_FAILED
                    states[k]["exit_code"] = rc
                    save()
                if preempt.requested():
                    for proc in running.values():
                        proc.send_signal(sig)
                    for k, proc in running.items():
                        proc.wait()
                        states[k]["state"] = PIPE_PENDING
                        states[k]["restarts"] += 1
                    running.clear()
                    save()
                    preempt.restore(previous)
                    previous = {}
                    _hand_over(sig, RuntimeError("pipeline preempted"))
                    raise RuntimeError("pipeline preempted and not requeued")
                for k in self.keys:
                    st = states[k]
                    if st["state"] != PIPE_PENDING or k in running:
                        continue
                    parent = tasks[k].parent
                    pstate = states.get(parent, {}).get("state") if parent else None
                    if parent and parent in states and pstate in (PIPE_FAILED, PIPE_CANCELLED):
                        st["state"] = PIPE_CANCELLED
                        st["reason"] = f"DependencyNeverSatisfied ({parent})"
                        save()
                        continue
                    if parent and not is_done(tasks[parent].run_dir):
                        continue  # parent still to run (here or elsewhere)
                    if len(running) >= self.parallelism:
                        break
                    running[k] = subprocess.Popen(
                        [sys.executable, "-m", "jobs.sweep.local_pipeline", "run", self.sweep_dir, k, self.runner],
                        cwd=str(Path(__file__).resolve().parent.parent.parent),
                    )
                    st["state"] = PIPE_RUNNING
                    save()
                if not running and all(
                    s["state"] in (PIPE_COMPLETED, PIPE_FAILED, PIPE_CANCELLED) or not self._startable(k, tasks)
                    for k, s in states.items()
                ):
                    break
                time.sleep(0.2)
            for k, s in states.items():
                if s["state"] == PIPE_PENDING:  # its parent is not in this pipeline and never got done
                    s["state"] = PIPE_CANCELLED
                    s["reason"] = "DependencyNeverSatisfied"
            report_state = State.SKIPPED.value
            if self.report:
                save(PIPE_RUNNING)
                try:
                    ReportTask(self.sweep_dir)()
                    report_state = PIPE_COMPLETED
                except Exception as e:  # the report must not hide the runs' outcome
                    print(f"[pipeline] report failed: {e!r}", file=sys.stderr)
                    report_state = PIPE_FAILED
            save(report_state)
            return {k: s["state"] for k, s in states.items()}
        except BaseException:
            for proc in running.values():  # Ctrl-C / cancel: do not leave orphans training
                if proc.poll() is None:
                    proc.terminate()
            for k, proc in running.items():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                if states[k]["state"] == PIPE_RUNNING:
                    states[k]["state"] = PIPE_CANCELLED
            running.clear()
            if any(s["state"] != PIPE_PENDING for s in states.values()):
                save()
            raise
        finally:
            if previous:
                preempt.restore(previous)

    def _startable(self, key: str, tasks: dict[str, Any]) -> bool:
        """Whether a pending task can still start: its parent is done, will be run by this pipeline, or is
        still pending or running in another live pipeline of the sweep (a rerun that added a fine-tune while
        the first pipeline still pretrained cancelled the new task at once)."""
        parent = tasks[key].parent
        return (parent is None or is_done(tasks[parent].run_dir) or parent in self.keys
                or _live_elsewhere(self.sweep_dir, parent))


def _live_elsewhere(sweep_dir: str, key: str) -> bool:
    """Whether task ``key``'s latest job is pending or running in a live local pipeline (the state that
    status and resume read: :func:`local_states`)."""
    rec = latest_jobs(read_jobs(sweep_dir)).get(key)
    if rec is None or rec.executor != LOCAL:
        return False
    return local_states(sweep_dir, [rec])[rec.job_id].active


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.sweep.local_pipeline run SWEEP_DIR KEY [RUNNER]``: run one manifest task here (pipeline child)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (3, 4) or args[0] != "run":
        print("usage: python -m jobs.sweep.local_pipeline run SWEEP_DIR TASK_KEY [module:function]", file=sys.stderr)
        return 2
    sweep_dir, key = args[1], args[2]
    tasks = read_manifest(sweep_dir).by_key()
    if key not in tasks:
        raise ValueError(f"{sweep_dir}: task {key!r} is not in the manifest")
    StageTask(tasks[key].config, args[3] if len(args) == 4 else DEFAULT_RUNNER)()
    return 0


def local_states(sweep_dir: str | Path, records: list[JobRecord]) -> dict[str, JobState]:
    """States of local-executor tasks from their pipeline's state file (and whether it is alive)."""
    out: dict[str, JobState] = {}
    # One state file read and one liveness check per pipeline, not per task (its records share both).
    pipelines: dict[tuple[str, int | None], tuple[dict[str, Any], bool]] = {}
    for r in records:
        if r.executor != LOCAL or r.pipeline is None:
            continue
        pid = r.pipeline
        if (pid, r.pipeline_start) not in pipelines:
            d = read_state(sweep_dir, pid)
            # Each pid is checked with its recorded start time: a pipeline killed without cleanup (OOM) whose pid
            # went to another process must not look alive (its tasks would never be resubmitted).
            alive = (pid_alive(int(d.get("pid", 0) or 0), recorded_start(d.get("pid_start")))
                     or pid_alive(int(pid), r.pipeline_start))
            pipelines[(pid, r.pipeline_start)] = d, alive
        d, alive = pipelines[(pid, r.pipeline_start)]
        st = d.get("tasks", {}).get(r.key, {}) if r.key else {"state": d.get("report", PIPE_PENDING)}
        state = str(st.get("state", PIPE_PENDING))
        if not alive and state in (PIPE_PENDING, PIPE_RUNNING):
            state = PIPE_CANCELLED if d else State.UNKNOWN.value
        out[r.job_id] = JobState(r.job_id, state, str(st.get("reason", "")), requeues=int(st.get("restarts", 0)))
    return out


if __name__ == "__main__":
    sys.exit(main())
