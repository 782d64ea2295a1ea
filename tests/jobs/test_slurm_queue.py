"""Parsing SLURM's views of a sweep's jobs (sacct with requeued attempts, array ranges; squeue)."""

from __future__ import annotations

from jobs.slurm_queue import JobState, expand_job_id, parse_sacct, parse_squeue, query_ids


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
