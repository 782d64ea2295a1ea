"""What a (re)submission submits, and with which dependencies -- decided from run folders and SLURM states."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jobs.sweep.manifest import JobRecord, Manifest, Task, pid_alive
from jobs.sweep.queue import JobState
from jobs.sweep.local_pipeline import local_states
from jobs.sweep.submit import _ranges, plan, submit

#   pretrain/a -> finetune/a1, finetune/a2 -> distill/a1d ;  pretrain/b -> finetune/b1 ;  supervised/s


def _manifest(tmp_path: Path, executor: str = "slurm") -> Manifest:
    edges = {"pretrain/a": None, "pretrain/b": None, "supervised/s": None, "finetune/a1": "pretrain/a",
             "finetune/a2": "pretrain/a", "finetune/b1": "pretrain/b", "distill/a1d": "finetune/a1"}
    tasks = []
    for key, parent in edges.items():
        run = tmp_path / "runs" / key
        tasks.append(Task(key=key, stage=key.split("/")[0], point=key, seed=0, hash="0" * 8, run_dir=str(run),
                          parent=parent, axes={}, overrides=[],
                          config={"stage": key.split("/")[0], "run_dir": str(run),
                                  "parent": str(tmp_path / "runs" / parent) if parent else None}))
    return Manifest(name="t", sweep_dir=str(tmp_path), definition={}, cluster={"executor": executor},
                    stages=["pretrain", "supervised", "finetune", "distill"], tasks=tasks)


def _done(m: Manifest, *keys: str) -> None:
    for t in m.tasks:
        if t.key in keys:
            Path(t.run_dir).mkdir(parents=True, exist_ok=True)
            (Path(t.run_dir) / "status.json").write_text(json.dumps({"state": "done"}))


def _jobs(**states: str) -> tuple[list[JobRecord], dict[str, JobState]]:
    records, js = [], {}
    for i, (key, state) in enumerate(states.items()):
        key = key.replace("__", "/")
        jid = f"100_{i}"
        records.append(JobRecord(**{"key": key, "job_id": jid, "executor": "slurm"}))
        reason = "DependencyNeverSatisfied" if state == "DEADPENDING" else ""
        js[jid] = JobState(jid, "PENDING" if state == "DEADPENDING" else state, reason)
    return records, js


def test_fresh_sweep_submits_everything_in_stage_order_with_parent_links(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    p = plan(m, [], {})
    assert [t.stage for t in p.submit] == ["pretrain", "pretrain", "supervised", "finetune", "finetune",
                                           "finetune", "distill"]
    assert p.parent_key == {"finetune/a1": "pretrain/a", "finetune/a2": "pretrain/a", "finetune/b1": "pretrain/b",
                            "distill/a1d": "finetune/a1"}
    assert not p.parent_job and not p.queued and not p.done and not p.cancel


def test_done_runs_are_never_resubmitted_and_queued_ones_never_duplicated(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    _done(m, "pretrain/a", "finetune/a1")
    records, states = _jobs(pretrain__b="RUNNING", supervised__s="PENDING", finetune__a2="FAILED",
                            finetune__b1="PENDING", distill__a1d="CANCELLED")
    p = plan(m, records, states)
    assert sorted(p.done) == ["finetune/a1", "pretrain/a"]
    assert sorted(p.queued) == ["finetune/b1", "pretrain/b", "supervised/s"]
    assert [t.key for t in p.submit] == ["finetune/a2", "distill/a1d"]
    assert not p.parent_key and not p.parent_job  # both parents are done: no dependency


def test_cancelled_task_reruns_with_its_dependants_only(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    _done(m, "pretrain/b", "supervised/s", "finetune/b1")
    # pretrain/a was cancelled by hand; its children were killed by --kill-on-invalid-dep (or not yet)
    records, states = _jobs(pretrain__a="CANCELLED", finetune__a1="CANCELLED", finetune__a2="DEADPENDING",
                            distill__a1d="PENDING")
    p = plan(m, records, states)
    assert [t.key for t in p.submit] == ["pretrain/a", "finetune/a1", "finetune/a2", "distill/a1d"]
    assert p.parent_key == {"finetune/a1": "pretrain/a", "finetune/a2": "pretrain/a", "distill/a1d": "finetune/a1"}
    # the never-satisfiable pending ones are cancelled before the resubmission, nothing else
    assert sorted(p.cancel) == ["100_2", "100_3"]


def test_dependency_on_a_parent_still_in_the_queue(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    records, states = _jobs(pretrain__a="RUNNING", finetune__a1="FAILED")
    p = plan(m, records, states)
    assert p.parent_job["finetune/a1"] == "100_0" and p.parent_job["finetune/a2"] == "100_0"
    assert p.parent_key["distill/a1d"] == "finetune/a1"
    assert "pretrain/a" in p.queued and "pretrain/a" not in [t.key for t in p.submit]


def test_plan_is_idempotent_once_everything_is_queued(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    records, states = _jobs(**{t.key.replace("/", "__"): "PENDING" for t in m.tasks})
    assert plan(m, records, states).submit == []


def test_ranges() -> None:
    assert _ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and _ranges([3]) == "3"


def test_dry_run_prints_one_array_per_stage_and_writes_nothing(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    m.cluster = {"executor": "slurm", "partition": "debug"}
    out: list[str] = []
    sub = submit(m, plan(m, [], {}), dry_run=True, printer=out.append)
    text = "\n".join(out)
    assert text.count("--array=") == 4  # pretrain, supervised, finetune, distill
    assert text.count("#!/bin/bash") == 5  # + the report job
    assert "--dependency='afterany:$" in text and "--kill-on-invalid-dep=yes" in text
    assert "afterok:$PRETRAIN_ARRAY_0" in text and "afterok:$FINETUNE_ARRAY_0" in text
    assert sub.sbatch_calls == 0 and not (tmp_path / "jobs.jsonl").exists() and not (tmp_path / "slurm").exists()


@pytest.mark.parametrize("executor", ["local"])
def test_dry_run_local_executor(tmp_path: Path, executor: str) -> None:
    m = _manifest(tmp_path, executor)
    out: list[str] = []
    submit(m, plan(m, [], {}), dry_run=True, printer=out.append)
    assert "one pipeline process, 7 task(s)" in out[0] and not (tmp_path / "jobs.jsonl").exists()


def test_a_report_that_failed_is_submitted_again_alone(tmp_path: Path) -> None:
    """Every task done but the report job failed (or was cancelled): resume used to say 'nothing to resubmit'."""
    m = _manifest(tmp_path)
    _done(m, *[t.key for t in m.tasks])
    records, states = _jobs()
    for state, due in [("FAILED", True), ("CANCELLED", True), ("COMPLETED", False), ("RUNNING", False)]:
        rec = [*records, JobRecord(**{"stage": "report", "key": None, "job_id": "200", "executor": "slurm"})]
        p = plan(m, rec, {**states, "200": JobState("200", state)})
        assert not p.submit and p.report_due is due and p.empty is not due, state
        if due:
            assert f"the report again (last one {state})" in p.summary()
    assert plan(m, records, states).report_due  # no report was ever submitted


def test_a_pending_old_report_is_cancelled_when_a_new_one_is_submitted(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    _done(m, "pretrain/a", "pretrain/b", "supervised/s", "finetune/a1", "finetune/a2", "finetune/b1")
    records, states = _jobs(distill__a1d="FAILED")
    records.append(JobRecord(**{"stage": "report", "key": None, "job_id": "201", "executor": "slurm"}))
    p = plan(m, records, {**states, "201": JobState("201", "PENDING", "Dependency")})
    assert [t.key for t in p.submit] == ["distill/a1d"] and "201" in p.cancel
    # a running report is left to finish its files
    p = plan(m, records, {**states, "201": JobState("201", "RUNNING")})
    assert "201" not in p.cancel


def test_a_rerun_queued_after_the_last_report_gets_a_report(tmp_path: Path) -> None:
    """A resume queued tasks, then was killed before the report sbatch: the next resume found every task
    queued and the last report COMPLETED, said 'nothing to resubmit', and no report ever covered the rerun."""
    m = _manifest(tmp_path)
    _done(m, *[t.key for t in m.tasks if t.key != "supervised/s"])
    records, states = _jobs(supervised__s="FAILED")
    records.append(JobRecord(**{"stage": "report", "key": None, "job_id": "101", "executor": "slurm"}))
    states["101"] = JobState("101", "COMPLETED")
    assert plan(m, records, states).submit  # supervised/s is resubmitted (with a report) ...
    # ... as 200_0, and the submitter dies before the report's sbatch
    records.append(JobRecord(**{"stage": "supervised", "key": "supervised/s", "job_id": "200_0", "executor": "slurm"}))
    p = plan(m, records, {**states, "200_0": JobState("200_0", "RUNNING")})
    assert not p.submit and p.queued == {"supervised/s": "200_0"} and p.report_due and not p.empty
    assert "the report again (last one COMPLETED)" in p.summary()
    _done(m, "supervised/s")  # the rerun finished meanwhile: still no report covers it
    p = plan(m, records, {**states, "200_0": JobState("200_0", "COMPLETED")})
    assert not p.submit and p.report_due and not p.empty
    # a report still running is left alone (it is not cancelled, and no second one is queued beside it)
    p = plan(m, records, {**states, "101": JobState("101", "RUNNING"), "200_0": JobState("200_0", "RUNNING")})
    assert not p.report_due and p.empty and not p.cancel
    # once a report follows the rerun's records, nothing is due
    records.append(JobRecord(**{"stage": "report", "key": None, "job_id": "201", "executor": "slurm"}))
    p = plan(m, records, {**states, "200_0": JobState("200_0", "COMPLETED"), "201": JobState("201", "COMPLETED")})
    assert not p.report_due and p.empty


def _sleeper(tmp_path: Path, name: str = "sleep") -> "subprocess.Popen[bytes]":
    """A real short-lived process, started through a link called ``name`` (its comm in /proc/<pid>/stat)."""
    link = tmp_path / name
    link.symlink_to(shutil.which("sleep") or "/bin/sleep")
    return subprocess.Popen([str(link), "30"])


def _local_records(pipeline: str, start: int | None) -> list[JobRecord]:
    return [JobRecord(key="pretrain/a", job_id=f"{pipeline}:0", executor="local", pipeline=pipeline,
                      pipeline_start=start)]


def test_a_reused_pid_does_not_keep_a_dead_local_pipeline_alive(tmp_path: Path) -> None:
    """The pipeline died without cleanup (OOM kill) and its pid went to another process: its tasks looked
    RUNNING forever, so resume never resubmitted them."""
    proc = _sleeper(tmp_path)
    try:
        pid = str(proc.pid)
        state = {"job_id": pid, "pid": proc.pid, "pid_start": 1, "tasks": {"pretrain/a": {"state": "RUNNING"}}}
        (tmp_path / "local").mkdir()
        (tmp_path / "local" / f"{pid}.json").write_text(json.dumps(state))
        # both recorded start times differ from the running process's: it is another process
        assert local_states(tmp_path, _local_records(pid, 1))[f"{pid}:0"].state == "CANCELLED"
        assert not pid_alive(proc.pid, 1)
    finally:
        proc.kill()
        proc.wait()


def test_the_recorded_start_time_identifies_the_live_pipeline(tmp_path: Path) -> None:
    from jobs.sweep.manifest import process_start

    proc = _sleeper(tmp_path, "a) b (c) d")  # a comm with ") " and spaces must not shift the fields
    try:
        start = process_start(proc.pid)
        assert start is not None and start >= (process_start(os.getpid()) or 0)
        pid = str(proc.pid)
        (tmp_path / "local").mkdir()
        state = {"job_id": pid, "pid": proc.pid, "pid_start": start, "tasks": {"pretrain/a": {"state": "RUNNING"}}}
        (tmp_path / "local" / f"{pid}.json").write_text(json.dumps(state))
        assert local_states(tmp_path, _local_records(pid, start))[f"{pid}:0"].state == "RUNNING"
        assert pid_alive(proc.pid, start) and not pid_alive(proc.pid, start + 1)
        # an old state file and record without start times: the pid alone, as before
        del state["pid_start"]
        (tmp_path / "local" / f"{pid}.json").write_text(json.dumps(state))
        assert local_states(tmp_path, _local_records(pid, None))[f"{pid}:0"].state == "RUNNING"
    finally:
        proc.kill()
        proc.wait()
    assert not pid_alive(proc.pid, start) and not pid_alive(proc.pid)


def test_ranks_of_a_stage_are_its_profiles_nodes_times_tasks(tmp_path: Path) -> None:
    """What the pre-queue size check divides a global batch by (SLURM_NTASKS of the stage's job)."""
    from jobs.sweep.submit import StageProfiles

    m = _manifest(tmp_path)
    m.cluster = {"executor": "slurm", "nodes": 1, "tasks_per_node": 1}
    m.stage_resources = {"pretrain": {"nodes": 2, "tasks_per_node": 4}}
    profiles = StageProfiles(m)
    assert profiles.ranks("pretrain") == 8 and profiles.ranks("finetune") == 1
    # The local executor runs every task as one process under the sweep's profile (_submit_local): 1 rank,
    # whatever a stage's resources say.
    m.cluster = {"executor": "local"}
    assert StageProfiles(m).ranks("pretrain") == 1
