"""Parsing SLURM's views of a sweep's jobs (sacct with requeued attempts, array ranges; squeue)."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.sweep import queue as slurm_queue
from jobs.sweep.queue import JobState, expand_job_id, parse_sacct, parse_squeue, query_ids


def test_expand_array_ranges() -> None:
    assert expand_job_id("12") == ["12"] and expand_job_id("12_3") == ["12_3"]
    assert expand_job_id("12_[0-2,5%4]") == ["12_0", "12_1", "12_2", "12_5"]
    assert expand_job_id("12_[0,2]") == ["12_0", "12_2"]
    assert expand_job_id("12_[0-6:3]") == ["12_0", "12_3", "12_6"]


def test_query_asks_once_per_array() -> None:
    assert query_ids(["5_0", "5_1", "9", "6_2", "5_7"]) == ["5", "9", "6"]


def test_sacct_current_attempt_and_requeue_count() -> None:
    text = "\n".join([
        "40_0|COMPLETED|None|0:0",
        "40_1|REQUEUED|None|0:0",      # preempted, requeued ...
        "40_1|PREEMPTED|None|0:15",    # ... twice
        "40_1|RUNNING|None|0:0",
        "40_[2-3%2]|PENDING|JobArrayTaskLimit|0:0",
        "41|CANCELLED by 0|None|0:0",
        "42_0|FAILED|NonZeroExitCode|1:0",
        "garbage",
    ])
    s = parse_sacct(text)
    assert s["40_0"] == JobState("40_0", "COMPLETED", "", "0:0", 0)
    assert s["40_1"].state == "RUNNING" and s["40_1"].requeues == 2 and s["40_1"].active
    assert s["40_2"].state == s["40_3"].state == "PENDING" and s["40_3"].reason == "JobArrayTaskLimit"
    assert s["41"].state == "CANCELLED" and not s["41"].active
    assert s["42_0"].state == "FAILED" and s["42_0"].exit_code == "1:0"


def test_squeue_and_dead_dependencies() -> None:
    s = parse_squeue("7_1|PENDING|Dependency|afterok:6_1(unfulfilled)\n"
                     "7_2|PENDING|DependencyNeverSatisfied|afterok:6_2(failed)\n8|RUNNING|None|(null)\n")
    assert s["7_1"].active and s["7_1"].dependency.startswith("afterok:6_1")
    assert not s["7_2"].active  # will never start: resume cancels and resubmits it
    assert s["8"].state == "RUNNING" and s["8"].reason == ""


def _fake_slurm(monkeypatch: pytest.MonkeyPatch, sacct: tuple[int, str] | None,
                squeue: tuple[int, str] | None) -> None:
    """sacct/squeue answer (rc, stdout), or time out (None)."""
    import subprocess

    def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        out = {"sacct": sacct, "squeue": squeue}[cmd[0]]
        if out is None:
            raise subprocess.TimeoutExpired(cmd, kw.get("timeout", 0))
        return subprocess.CompletedProcess(cmd, out[0], out[1], "slurm_load_jobs error" if out[0] else "")

    monkeypatch.setattr(slurm_queue, "slurm_available", lambda: True)
    monkeypatch.setattr(slurm_queue.subprocess, "run", run)


def test_a_stale_running_record_is_not_taken_for_a_live_job(monkeypatch: pytest.MonkeyPatch) -> None:
    # The job died (out of memory) longer than MinJobAge ago, so squeue no longer lists it, even with -t all;
    # slurmdbd still has its stale RUNNING record.
    _fake_slurm(monkeypatch, (0, "100_0|RUNNING|None|0:0\n100_1|COMPLETED|None|0:0\n"), (0, "100_2|PENDING|None|\n"))
    s = slurm_queue.query(["100_0", "100_1", "100_2"])
    assert s["100_0"].state == "UNKNOWN" and not s["100_0"].active and "RUNNING" in s["100_0"].reason
    assert s["100_1"].state == "COMPLETED" and s["100_2"].state == "PENDING" and s["100_2"].active


def test_a_job_that_just_ended_is_not_taken_for_a_lost_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # The report job completed a moment ago; slurmdbd still has it RUNNING. squeue, like the real one, lists
    # finished jobs only when asked for every state (`-t all`); by default it shows pending/running ones.
    import subprocess

    queue = {"216": "COMPLETED", "217": "RUNNING", "218": "FAILED", "219": "FAILED"}

    def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(cmd, 0, "216|RUNNING|None|0:0\n217|RUNNING|None|0:0\n"
                                               "218|RUNNING|None|0:0\n219|FAILED|NonZeroExitCode|3:0\n", "")
        every = "-t" in cmd and cmd[cmd.index("-t") + 1] == "all"
        lines = [f"{j}|{st}|None|(null)" for j, st in queue.items() if every or st in ("PENDING", "RUNNING")]
        return subprocess.CompletedProcess(cmd, 0, "\n".join(lines) + "\n", "")

    monkeypatch.setattr(slurm_queue, "slurm_available", lambda: True)
    monkeypatch.setattr(slurm_queue.subprocess, "run", run)
    s = slurm_queue.query(["216", "217", "218", "219"])
    assert s["216"].state == "COMPLETED" and not s["216"].active  # not UNKNOWN (final: --watch stopped on it)
    assert s["217"].state == "RUNNING" and s["217"].active
    # the exit code is the accounting's once it has recorded the end, not a lagging RUNNING record's 0:0
    assert (s["218"].state, s["218"].exit_code) == ("FAILED", "") and s["219"].exit_code == "3:0"


@pytest.mark.parametrize("squeue", [None, (1, "")], ids=["timeout", "error"])
def test_an_unreadable_queue_is_never_taken_for_an_empty_one(monkeypatch: pytest.MonkeyPatch,
                                                            squeue: tuple[int, str] | None) -> None:
    _fake_slurm(monkeypatch, (1, ""), squeue)
    s = slurm_queue.query(["100_0", "101_0"])
    # Not UNKNOWN (that is final: status --watch would stop, a plan would resubmit running tasks).
    assert {v.state for v in s.values()} == {slurm_queue.QUERY_FAILED} and s["100_0"].reason
    with pytest.raises(slurm_queue.QueueUnavailable, match="squeue"):
        slurm_queue.query(["100_0"], require_live=True)
    # With the accounting readable, its (possibly stale) record is the best there is for a status table.
    _fake_slurm(monkeypatch, (0, "100_0|RUNNING|None|0:0\n"), squeue)
    assert slurm_queue.query(["100_0"])["100_0"].state == "RUNNING"


def test_a_labmates_jobs_are_read_from_their_queue(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Bob resumes Alice's sweep: `squeue -u bob` lists none of her jobs, so her running tasks read UNKNOWN
    (not active) and the plan submitted them a second time. squeue here answers per -u user, like the real one."""
    import subprocess

    from jobs.sweep.manifest import JobRecord, append_jobs
    from jobs.sweep.submit import job_states

    queues = {"alice": ["300_0|RUNNING|None|(null)"], "bob": []}
    asked: list[str] = []

    def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(cmd, 0, "300_0|RUNNING|None|0:0\n", "")
        users = cmd[cmd.index("-u") + 1].split(",")
        asked.append(",".join(users))
        return subprocess.CompletedProcess(cmd, 0, "".join(l + "\n" for u in users for l in queues.get(u, [])), "")

    monkeypatch.setattr(slurm_queue, "slurm_available", lambda: True)
    monkeypatch.setattr(slurm_queue.subprocess, "run", run)
    monkeypatch.setattr(slurm_queue.getpass, "getuser", lambda: "bob")
    monkeypatch.setattr(slurm_queue, "_known_user", lambda u: u != "gone")  # an account deleted since
    append_jobs(tmp_path, [JobRecord(**{"key": "pretrain/a", "job_id": "300_0", "executor": "slurm", "user": "alice",
                            "stage": "pretrain"}),
                           JobRecord(**{"key": "pretrain/b", "job_id": "299_0", "executor": "slurm", "user": "gone",
                            "stage": "pretrain"})])
    from jobs.sweep.manifest import read_jobs

    st = job_states(tmp_path, read_jobs(tmp_path), require_live=True)
    assert st["300_0"].state == "RUNNING" and st["300_0"].active and asked == ["alice,bob"]


def test_no_slurm_commands_is_no_licence_to_resubmit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sacct/squeue on PATH every job read UNKNOWN, and a plan took running tasks for lost ones."""
    monkeypatch.setattr(slurm_queue, "slurm_available", lambda: False)
    assert slurm_queue.query(["5_0"])["5_0"].state == "UNKNOWN"  # a status table may still show that
    with pytest.raises(slurm_queue.QueueUnavailable, match="not on PATH"):
        slurm_queue.query(["5_0"], require_live=True)
    assert slurm_queue.query([], require_live=True) == {}
