"""The one vocabulary of a task's state, as SLURM names it (``sacct``/``squeue``), used for SLURM jobs, the local
pipeline's tasks and the rows ``simclr-status`` shows alike.

SLURM may report states this list does not name (a newer release): readers keep such a state as its string
and treat it as neither active nor final, so nothing is planned on it by mistake.
"""

from __future__ import annotations

import enum

__all__ = ["ACTIVE", "FINAL", "State"]


class State(str, enum.Enum):
    # waiting or running: the job holds or will take a place in the queue
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    REQUEUED = "REQUEUED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    REQUEUE_FED = "REQUEUE_FED"
    SUSPENDED = "SUSPENDED"
    CONFIGURING = "CONFIGURING"
    COMPLETING = "COMPLETING"
    RESIZING = "RESIZING"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    STOPPED = "STOPPED"
    # ended
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    REVOKED = "REVOKED"
    # ours: a run whose status.json says done; a report not run; no record; a record SLURM no longer has;
    # a job whose state could not be learnt because squeue failed (jobs.sweep.queue)
    DONE = "DONE"
    SKIPPED = "SKIPPED"
    NOT_SUBMITTED = "NOT_SUBMITTED"
    UNKNOWN = "UNKNOWN"
    QUERY_FAILED = "QUERY_FAILED"


# States in which a job still holds or will take a place in the queue.
_MEMBERS = list(State)
ACTIVE: frozenset[str] = frozenset(s.value for s in _MEMBERS[: _MEMBERS.index(State.STOPPED) + 1])
# States after which nothing more happens to a task (unless it is resubmitted).
FINAL: frozenset[str] = frozenset(s.value for s in _MEMBERS if s.value not in ACTIVE and s is not State.QUERY_FAILED)
