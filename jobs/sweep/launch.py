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

SIGTERM (preemption without ``preempt_send_user_signal``, the time limit, ``scancel --signal=TERM``) means
the same at every moment of the task (issue 23). The task process starts as ``jobs.sweep.entry``, which
records TERM/USR2 with the standard library alone until submitit's handlers are in place and then delivers
them; submitit's ``bypass`` of TERM is replaced. With the profile's ``sigterm: requeue`` (the default) TERM
takes the USR2 path above -- unless SLURM shows the job cancelled by ``scancel`` (``entry.cancelled``): then it
stops, as a cancel must -- (:class:`StageTask` routes both to ``preempt``, installed before the runner's heavy
imports, and hands over by raising USR2); with ``sigterm: stop`` it ends the task with
``jobs.sweep.entry.TerminationRequested`` (FAILED in SLURM, the reason in submitit's result; a checkpoint of the
step it stopped at when training had begun). Only the interpreter's own start (tens of ms) is left to TERM's
default, and a TERM sent before slurmstepd started the task is lost by SLURM (both measured).

A plain requeue with no signal (a node failure, SIGKILL): the process just dies, SLURM starts the task again,
and ``run_stage`` resumes from the run folder's latest periodic checkpoint -- the task's identity is its run
folder, never its job id.

On the local executor (no SLURM) ``jobs.sweep.local_pipeline`` runs a whole sweep in one background process;
each of its tasks runs in this same :class:`StageTask`.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from jobs.sweep.entry import CANCELLED, SIGTERM_ENV, TerminationRequested, cancelled, preempt_signal, sigterm_action
from simclr.runfolder.read import read_status

# Seconds a non-zero rank waits for rank 0's requeue to end the step before giving up.
_RANK_WAIT_S = 300.0


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

        sig = preempt_signal()
        # SIGTERM too where the sbatch script says what it means (jobs.sweep.entry); elsewhere (the local
        # executor's pipeline children) it keeps its default. Routed BEFORE the runner's heavy imports (torch):
        # a signal during them is only recorded, and acted on below, with nothing to save.
        term = sigterm_action() if SIGTERM_ENV in os.environ else None
        routed = [sig] if term is None or sig == signal.SIGTERM else [sig, signal.SIGTERM]
        preempt.clear()
        previous = preempt.install(routed)
        try:
            run_stage = resolve_runner(self.runner)
            check_parent(self.config)
            if _num_tasks() > 1:
                # Always from this allocation: a MASTER_ADDR inherited from the submitting shell (sbatch exports
                # it) or set by a setup line used to skip the export, leaving WORLD_SIZE unset, so every task
                # trained alone as rank 0 into the same run folder.
                export_distributed()
            if preempt.requested():  # came during the imports: the run has not started, nothing to save
                raise preempt.PreemptionRequested(preempt.signum(), -1)
            return run_stage(self.config)
        except preempt.PreemptionRequested as e:
            preempt.restore(previous)
            previous = {}
            if e.signum == signal.SIGTERM and (term == "stop" or cancelled()):
                where = "before the run started" if e.step < 0 else f"checkpoint saved at step {e.step}"
                raise TerminationRequested(where, *(() if term == "stop" else (CANCELLED,))) from e
            # Whichever signal came, submitit's requeue is bound to the preemption signal: the one path.
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
