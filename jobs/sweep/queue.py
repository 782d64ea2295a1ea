"""What SLURM says about a sweep's jobs: one ``sacct`` call (history, requeues) plus one ``squeue`` call
(the live queue, authoritative while a job waits or runs), parsed into one :class:`JobState` per task id.

Job ids are strings: ``"130"`` for a plain job, ``"123_4"`` for task 4 of array 123. ``sacct`` folds
pending array tasks into ranges (``123_[5-9,12%4]``) and, with ``--duplicates``, lists every earlier
attempt of a requeued task (state ``REQUEUED``/``PREEMPTED``): the attempts are counted as requeues.
Finished jobs leave ``squeue`` after ``MinJobAge``; ``sacct`` keeps them. A task found in neither (a
pending array task cancelled before it ever ran leaves no record at all) is ``UNKNOWN``.

``squeue`` is asked for every state (``-t all``): by default it lists only pending, running and completing
jobs, so a job that ended a moment ago would be in neither view while slurmdbd records its end, and be
taken for lost (the report of a resumed sweep read UNKNOWN seconds after it completed). With ``-t all`` a
finished job stays in the queue's view, with its final state, for ``MinJobAge`` (60 s on the bundled
cluster, 300 s by default).

When ``squeue`` answered, a job it does not list is not queued or running, whatever ``sacct`` says: it
ended longer than ``MinJobAge`` ago (or the controller restarted), and slurmdbd, which may keep a stale
``RUNNING`` record after an out-of-memory kill or a node failure, has not recorded its end; trusting it
would leave a dead task unsubmitted forever. Such a job is ``UNKNOWN`` with the
stale record named in its reason. When ``squeue`` could not be read at all, nothing is known about what
is live: jobs without an accounting record are ``QUERY_FAILED`` (not final: ``status --watch`` keeps
polling), and :func:`query` with ``require_live=True`` (what a submission plans on) raises
:class:`QueueUnavailable` instead, so that a busy controller never makes a resume submit running tasks
a second time.
"""

from __future__ import annotations

import getpass
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass

from jobs.sweep.states import ACTIVE, State

# Pending reasons meaning "this will never start": resume cancels and resubmits such tasks.
DEAD_REASONS = frozenset({"DependencyNeverSatisfied"})
_ARRAY = re.compile(r"^(?P<base>\d+)_\[(?P<spec>[^\]]+)\]$")
# A job whose state could not be learnt because squeue failed (see the module docstring).
QUERY_FAILED = State.QUERY_FAILED.value


class QueueUnavailable(ValueError):
    """SLURM's live queue could not be read: nothing may be planned on a guess (the message says why)."""


@dataclass
class JobState:
    """SLURM's view of one job or array task."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ..., UNKNOWN
    reason: str = ""
    exit_code: str = ""
    requeues: int = 0
    dependency: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE and self.reason not in DEAD_REASONS


def expand_job_id(job_id: str) -> list[str]:
    """``123_[0-2,5%4]`` -> ``["123_0", "123_1", "123_2", "123_5"]``; other ids unchanged."""
    m = _ARRAY.match(job_id)
    if m is None:
        return [job_id]
    spec = m["spec"].split("%", 1)[0]
    out: list[str] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            step = 1
            if ":" in hi:
                hi, s = hi.split(":", 1)
                step = int(s)
            out.extend(f"{m['base']}_{i}" for i in range(int(lo), int(hi) + 1, step))
        elif part:
            out.append(f"{m['base']}_{int(part)}")
    return out


def query_ids(job_ids: list[str]) -> list[str]:
    """The ids to ask about: array tasks as their array job id (one id fetches every task)."""
    seen: dict[str, None] = {}
    for j in job_ids:
        seen[j.split("_", 1)[0]] = None
    return list(seen)


def parse_sacct(text: str) -> dict[str, JobState]:
    """Parse ``sacct -n -P -X -D -o JobID,State,Reason,ExitCode``: the current attempt of each id, with
    the number of earlier (requeued) attempts."""
    attempts: dict[str, list[tuple[str, str, str]]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        jid, state, reason, exit_code = parts[0], parts[1].split(" ", 1)[0], parts[2], parts[3]
        for one in expand_job_id(jid):
            attempts.setdefault(one, []).append((state, reason, exit_code))
    out: dict[str, JobState] = {}
    for jid, recs in attempts.items():
        # Earlier attempts of a requeued task end REQUEUED (or PREEMPTED when the requeue came from a
        # preemption); the current attempt is the one that is not, or the last one.
        current = [r for r in recs if r[0] not in ("REQUEUED", "PREEMPTED")]
        state, reason, exit_code = current[-1] if current else recs[-1]
        out[jid] = JobState(jid, state, "" if reason == "None" else reason, exit_code, requeues=len(recs) - 1)
    return out


def parse_squeue(text: str) -> dict[str, JobState]:
    """Parse ``squeue -h -r -t all -o %i|%T|%r|%E`` (one line per array task)."""
    out: dict[str, JobState] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        jid, state, reason, dep = parts[:4]
        for one in expand_job_id(jid):
            out[one] = JobState(one, state, "" if reason == "None" else reason, dependency=dep)
    return out


def _known_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def slurm_available() -> bool:
    return shutil.which("sacct") is not None and shutil.which("squeue") is not None


def _run(cmd: list[str], timeout_s: float) -> tuple[str | None, str]:
    """stdout of ``cmd``, or None and why it failed (exit status, stderr, time-out)."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"{cmd[0]} did not answer within {timeout_s:g} s"
    except OSError as e:
        return None, f"{cmd[0]}: {e}"
    if p.returncode != 0:
        return None, f"{cmd[0]} exited {p.returncode}: {p.stderr.strip()[:300]}"
    return p.stdout, ""


def query(job_ids: list[str], timeout_s: float = 60.0, *, require_live: bool = False,
          users: list[str] | None = None) -> dict[str, JobState]:
    """Current state of each id in ``job_ids`` (``UNKNOWN`` when SLURM has no record of it).

    ``require_live``: raise :class:`QueueUnavailable` when ``squeue`` cannot be read, instead of answering
    from the accounting alone (see the module docstring). ``users``: whose queues hold the jobs besides the
    caller's (a sweep folder shared by a team: a labmate's running tasks, absent from the caller's own queue,
    read as lost and a resume submitted them a second time).
    """
    result = {j: JobState(j, "UNKNOWN") for j in job_ids}
    if not job_ids:
        return result
    if not slurm_available():
        if require_live:  # SLURM jobs on record, and no way to ask about them (another host, PATH)
            raise QueueUnavailable("cannot read SLURM's queue (sacct/squeue are not on PATH); nothing was "
                                   "submitted or cancelled: run this where the SLURM commands are")
        return result
    ids = ",".join(query_ids(job_ids))
    out, _ = _run(["sacct", "-n", "-P", "-X", "-D", "-j", ids, "-o", "JobID,State,Reason,ExitCode"], timeout_s)
    acct = parse_sacct(out) if out is not None else {}
    # The user's whole queue, filtered here: `squeue -j` fails outright when one id has left memory. Every
    # state, so that a job which just ended is still seen (see the module docstring).
    # Only accounts that exist: squeue fails outright on an unknown user (one who left), reading as a dead queue.
    owners = ",".join(sorted({getpass.getuser(), *(u for u in users or [] if _known_user(u))}))
    out, why = _run(["squeue", "-h", "-r", "-t", "all", "-u", owners, "-o", "%i|%T|%r|%E"], timeout_s)
    if out is None and require_live:
        raise QueueUnavailable(f"cannot read SLURM's queue ({why}); nothing was submitted or cancelled, "
                               "try again when the controller answers")
    live = parse_squeue(out) if out is not None else {}
    for j in job_ids:
        a, q = acct.get(j), live.get(j)
        if q is not None:
            # The queue is the live truth; the accounting adds the requeue count, and the exit code once it
            # has recorded the job's end (a lagging RUNNING record's 0:0 is not the exit code of a FAILED job).
            exit_code = a.exit_code if a is not None and a.state not in ACTIVE else ""
            result[j] = JobState(j, q.state, q.reason, exit_code, a.requeues if a else 0, q.dependency)
        elif out is None:
            result[j] = a if a is not None else JobState(j, QUERY_FAILED, why)
        elif a is not None and a.state in ACTIVE:
            result[j] = JobState(j, "UNKNOWN", f"accounting says {a.state}, not in the queue", a.exit_code,
                                 a.requeues)
        elif a is not None:
            result[j] = a
    return result
