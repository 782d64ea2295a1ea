"""The ONE submitit wrapper every stage runs in: a picklable callable with ``__call__`` and ``checkpoint``.

Preemption and time limits (submitit's checkpoint protocol, ``submitit/core/job_environment.py``):
submitit installs its ``SignalHandler`` for USR2 before calling the task; on the signal it calls
``task.checkpoint()`` on global rank 0, pickles the returned ``DelayedSubmission``, runs
``scontrol requeue`` and exits. Saving from inside a signal handler could catch the model half-way
through an optimizer step, so :class:`StageTask` routes USR2 to ``simclr.train.preempt`` instead: the
training loop sees the flag at the next step boundary, all ranks agree, a checkpoint is written and
``PreemptionRequested`` is raised (during the final evaluation, after the last checkpoint, rank 0 raises
it at once: ``preempt.interruptible``). Only then is submitit's handler put back and the signal raised again
in this process, so that submitit's own code path (countdown of time-outs, ``checkpoint()``, requeue)
runs with the state already on disk. Ranks other than 0 return from submitit's handler without doing
anything (it must not exit them, or srun might kill rank 0 mid-requeue); they wait for the requeue to
end the job step.

A plain requeue with no signal (a SIGTERM preemption, a node failure): the process just dies, SLURM
starts the task again, and ``run_stage`` resumes from the run folder's latest periodic checkpoint -- the
task's identity is its run folder, never its job id.

On the local executor (no SLURM) :class:`PipelineTask` runs a whole sweep in one background process,
each point in a child process when its parent run is done, then the report.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.sweep.manifest import (
    atomic_write_text,
    is_done,
    latest_jobs,
    process_start,
    read_jobs,
    read_manifest,
    read_status,
)

# Seconds a non-zero rank waits for rank 0's requeue to end the step before giving up.
_RANK_WAIT_S = 300.0


def preempt_signal() -> signal.Signals:
    """The signal submitit treats as preemption/time-out (USR2 unless SUBMITIT_PREEMPT_SIGNAL says)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    try:
        return signal.Signals["SIG" + name]
    except KeyError:
        raise ValueError(f"SUBMITIT_PREEMPT_SIGNAL={name!r} is not a signal name (e.g. USR2)") from None


def _global_rank() -> int:
    for var in ("SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID", "RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def _num_tasks() -> int:
    for var in ("SLURM_NTASKS", "SUBMITIT_LOCAL_NTASKS"):
        if var in os.environ:
            return int(os.environ[var])
    return 1


def _resolve_master_addr() -> None:
    """The emulated nodes of a one-host cluster have names no resolver knows; SLURM knows their address."""
    addr = os.environ.get("MASTER_ADDR", "")
    try:
        socket.gethostbyname(addr)
        return
    except OSError:
        pass
    try:
        out = subprocess.run(["scontrol", "show", "node", addr], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return
    for word in out.split():
        if word.startswith("NodeAddr="):
            os.environ["MASTER_ADDR"] = word.split("=", 1)[1]
            return


def export_distributed() -> None:
    """MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from SLURM (torch's env:// init) for multi-task jobs,
    replacing whatever the environment held (the first node of the allocation is the master; pick the
    network interface with GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME, not with MASTER_ADDR).

    CUDA_VISIBLE_DEVICES is left alone: the runner picks ``cuda:LOCAL_RANK`` itself.
    """
    import submitit

    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    _resolve_master_addr()


def check_parent(config: dict[str, Any]) -> None:
    """Refuse to start from a parent run that is not done.

    SLURM's ``afterok`` normally guarantees it, but Slurm 22.05 silently drops a dependency on a job it
    has no record of (measured: ``scontrol update ... dependency=afterok:<unknown id>`` just clears it;
    seen too for an array task cancelled while pending before any node was up), so the task checks the
    run folder itself and fails loudly instead of training from nothing.
    """
    parent = config.get("parent")
    if not parent:
        return
    st = read_status(parent)
    if st is None or st.get("state") != "done":
        state = "no status.json" if st is None else f"state {st.get('state')!r} ({st.get('reason')})"
        raise RuntimeError(f"parent run {parent} is not done ({state}): run {config.get('run_dir')} cannot start")


DEFAULT_RUNNER = "jobs.stages.runner:run_stage"


def resolve_runner(path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``"package.module:function"`` -> the function (imported on the compute node, by module path)."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"runner {path!r}: expected 'module:function'")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"runner {path!r}: {module} has no function {name}")
    return fn  # type: ignore[no-any-return]


class StageTask:
    """Runs one stage config point (``jobs.stages.runner.run_stage``) as a checkpointable submitit task.

    ``runner`` names the function by module path; only tests of the job layer itself swap it for a small
    callable that follows the same run-folder contract.
    """

    def __init__(self, config: dict[str, Any], runner: str = DEFAULT_RUNNER) -> None:
        self.config = config
        self.runner = runner

    def __repr__(self) -> str:
        return f"StageTask({self.config.get('stage')}, {self.config.get('run_dir')})"

    def __call__(self) -> dict[str, Any]:
        from simclr.train import preempt

        run_stage = resolve_runner(self.runner)
        check_parent(self.config)
        if _num_tasks() > 1:
            # Always from this allocation: a MASTER_ADDR inherited from the submitting shell (sbatch exports
            # it) or set by a setup line used to skip the export, leaving WORLD_SIZE unset, so every task
            # trained alone as rank 0 into the same run folder.
            export_distributed()
        sig = preempt_signal()
        preempt.clear()
        previous = preempt.install([sig])
        try:
            return run_stage(self.config)
        except preempt.PreemptionRequested as e:
            preempt.restore(previous)
            previous = {}
            _hand_over(sig, e)
            raise  # only reached when nothing took the signal over (see _hand_over)
        finally:
            if previous:
                preempt.restore(previous)

    def checkpoint(self) -> Any:
        """Called by submitit on rank 0 after the signal: requeue the same task (it resumes from its folder)."""
        import submitit

        return submitit.helpers.DelayedSubmission(StageTask(self.config, self.runner))


def _hand_over(sig: signal.Signals, error: Exception) -> None:
    """Raise ``sig`` again now that submitit's handler is back, and let it checkpoint and requeue.

    Rank 0: submitit's handler calls ``checkpoint()``, requeues and exits (SystemExit raised here).
    Other ranks: the handler returns at once; wait for the requeue to end the step. With no submitit
    handler at all (a plain process), the default action of the signal ends the process.
    """
    os.kill(os.getpid(), sig)
    # The handler runs at the next bytecode boundary in the main thread; give it that chance.
    deadline = time.monotonic() + (_RANK_WAIT_S if _global_rank() != 0 else 5.0)
    while time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"[launch] preempted ({error}) but the job was not requeued within the wait", file=sys.stderr)


class ReportTask:
    """The sweep's last job: ``analysis.report.main([sweep_dir])``, run whatever the tasks' outcome."""

    def __init__(self, sweep_dir: str) -> None:
        self.sweep_dir = sweep_dir

    def __repr__(self) -> str:
        return f"ReportTask({self.sweep_dir})"

    def __call__(self) -> Any:
        from analysis import report  # another room; imported lazily so the job layer never needs it

        rc = report.main([self.sweep_dir])
        if isinstance(rc, int) and rc != 0:  # let SLURM (and `status`) show a report that found nothing
            raise RuntimeError(f"analysis.report.main([{self.sweep_dir!r}]) exited with status {rc}")
        return rc

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(ReportTask(self.sweep_dir))


# ---------------------------------------------------------------------------------------------------
# Local executor: the whole sweep in one background pipeline process
# ---------------------------------------------------------------------------------------------------
# States of a task in a pipeline, named as SLURM names them so that `status` shows one vocabulary.
PIPE_PENDING, PIPE_RUNNING, PIPE_COMPLETED, PIPE_FAILED, PIPE_CANCELLED = (
    "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED",
)


def pipeline_state_path(sweep_dir: str | Path, job_id: str) -> Path:
    return Path(sweep_dir) / "local" / f"{job_id}.json"


class PipelineTask:
    """Runs ``keys`` of a sweep's manifest on this machine in dependency order, ``parallelism`` at once.

    Each task runs as ``python -m jobs.sweep.launch run SWEEP_DIR KEY`` (a fresh interpreter: no state leaks
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
        old = _read_json(state_path).get("tasks", {})
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
                        [sys.executable, "-m", "jobs.sweep.launch", "run", self.sweep_dir, k, self.runner],
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
            report_state = "SKIPPED"
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
    status and resume read: :func:`jobs.sweep.submit.local_states`)."""
    from jobs.sweep.submit import local_states  # (jobs.sweep.submit imports this module)

    rec = latest_jobs(read_jobs(sweep_dir)).get(key)
    if rec is None or rec.get("executor") != "local":
        return False
    return local_states(sweep_dir, [rec])[str(rec["job_id"])].active


def _read_json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.sweep.launch run SWEEP_DIR KEY [RUNNER]``: run one manifest task here (pipeline child)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (3, 4) or args[0] != "run":
        print("usage: python -m jobs.sweep.launch run SWEEP_DIR TASK_KEY [module:function]", file=sys.stderr)
        return 2
    sweep_dir, key = args[1], args[2]
    tasks = read_manifest(sweep_dir).by_key()
    if key not in tasks:
        raise ValueError(f"{sweep_dir}: task {key!r} is not in the manifest")
    StageTask(tasks[key].config, args[3] if len(args) == 4 else DEFAULT_RUNNER)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
