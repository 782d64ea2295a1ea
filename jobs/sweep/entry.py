"""The task process's entry point on the compute node: ``python -u -m jobs.sweep.entry FOLDER``.

submitit starts a task as ``python -u -m submitit.core._submit FOLDER``, which imports submitit (and numpy),
unpickles the job (importing our modules) and only then installs its signal handlers. A SIGTERM in that
start-up killed the task (``FAILED``, no requeue); one a moment later was ignored by submitit's
``bypass`` handler. So TERM either killed or did nothing, depending on timing (issue 23).

This module imports only the standard library before it installs its own handler for SIGTERM and the
preemption signal (USR2, or ``SUBMITIT_PREEMPT_SIGNAL``): a signal that arrives during start-up is only
recorded. It then runs submitit's own ``process_job``; right after submitit installed its handlers, SIGTERM
is bound like the preemption signal (``SIMCLR_SIGTERM=requeue``, the default: checkpoint + requeue) or to
a clean stop (``stop``: an error submitit records, the job ends FAILED), and a signal recorded during
start-up is raised again, so it takes the same path as one that comes later. ``jobs.sweep.launch.StageTask``
then routes both signals to the training loop's step-boundary checkpoint.

Only the interpreter's own start (before this module runs, some tens of ms) is left to the signal's default.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

# What SIGTERM means to a task; set by the cluster profile's ``sigterm`` key in the sbatch script.
SIGTERM_ENV = "SIMCLR_SIGTERM"
SIGTERM_ACTIONS = ("requeue", "stop")

_early: list[int] = []


class TerminationRequested(Exception):
    """SIGTERM meant stop (``SIMCLR_SIGTERM=stop``, or the job was cancelled): the task ends as a failure
    that says why (not a kill)."""

    def __init__(self, detail: str = "", cause: str = f"{SIGTERM_ENV}=stop") -> None:
        super().__init__(f"stopped by SIGTERM ({cause}){': ' + detail if detail else ''}")


CANCELLED = "the job was cancelled (scancel)"


def cancelled(environ: dict[str, str] | None = None, run: Any = None) -> bool:
    """Whether the TERM that came is a user's ``scancel``, not a time limit or a preemption.

    SLURM tells them apart only by the job's reason (measured on slurm 22.05): at the TERM of ``scancel`` the job
    is ``COMPLETING`` with ``Reason=None``; at the time limit ``COMPLETING`` with ``Reason=TimeLimit``. A
    cancelled job must not requeue itself (it ran to the end, cancelled). Outside SLURM, or when ``scontrol``
    does not answer, False: the TERM keeps its profile's meaning.
    """
    import re
    import subprocess

    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        out = (run or subprocess.run)(["scontrol", "show", "job", "-o", job], capture_output=True, text=True,
                                      timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    state, reason = re.search(r"\bJobState=(\S+)", out), re.search(r"\bReason=(\S+)", out)
    return bool(state and reason and state.group(1) in ("COMPLETING", "CANCELLED") and reason.group(1) == "None")


def sigterm_action(environ: dict[str, str] | None = None) -> str:
    """``requeue`` (default) or ``stop``; anything else is an error naming the variable."""
    value = (os.environ if environ is None else environ).get(SIGTERM_ENV, "requeue")
    if value not in SIGTERM_ACTIONS:
        raise ValueError(f"{SIGTERM_ENV}={value!r} is not one of {SIGTERM_ACTIONS}")
    return value


def preempt_signal(environ: dict[str, str] | None = None) -> signal.Signals:
    """The signal submitit treats as preemption/time-out (USR2 unless SUBMITIT_PREEMPT_SIGNAL says)."""
    name = (os.environ if environ is None else environ).get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    try:
        return signal.Signals["SIG" + name]
    except KeyError:
        raise ValueError(f"SUBMITIT_PREEMPT_SIGNAL={name!r} is not a signal name (e.g. USR2)") from None


def _record(signum: int, frame: FrameType | None) -> None:
    if signum not in _early:  # once per signal: a second TERM during start-up means nothing more
        _early.append(signum)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise TerminationRequested("during start-up, before the task ran")


def _requeue_unless_cancelled(requeue: Any) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        if cancelled():
            raise TerminationRequested("during start-up, before the task ran", CANCELLED)
        requeue(signum, frame)

    return handler


def install_early() -> None:
    """Record SIGTERM and the preemption signal until submitit's handlers are in place."""
    for s in {signal.SIGTERM, preempt_signal()}:
        signal.signal(s, _record)


def route_sigterm(action: str) -> None:
    """After submitit installed its handlers: SIGTERM as the preemption signal (requeue) or a clean stop."""
    if action == "requeue":  # (a user's scancel still stops: see cancelled)
        requeue = signal.getsignal(preempt_signal())
        signal.signal(signal.SIGTERM, _requeue_unless_cancelled(requeue) if callable(requeue) else requeue)
    else:
        signal.signal(signal.SIGTERM, _stop)


def deliver_early() -> list[int]:
    """Raise again the signals recorded during start-up (to the handlers now in place); returns them."""
    pending = list(_early)
    _early.clear()
    for s in pending:
        os.kill(os.getpid(), s)
    return pending


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -u -m jobs.sweep.entry SUBMITIT_FOLDER")
    install_early()  # first: nothing heavy has been imported yet
    action = sigterm_action()
    from submitit.core import job_environment, submission

    original = job_environment.JobEnvironment._handle_signals

    def handle_signals(self: Any, paths: Any, delayed: Any) -> None:
        original(self, paths, delayed)
        route_sigterm(action)
        deliver_early()

    # submitit's plugin hook for a cluster's signals; patched in this process only.
    job_environment.JobEnvironment._handle_signals = handle_signals  # type: ignore[method-assign,assignment]
    submission.process_job(args[0])


if __name__ == "__main__":
    main()
