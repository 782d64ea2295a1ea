"""``cancel``: everything still queued or running stops; the run folders stay for ``resume``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jobs.cli import cancel as cancel_mod
from jobs.sweep import submit as submit_mod
from jobs.cli.resume import run_resume
from jobs.sweep.status import collect, finished
from jobs.cli.sweep import run_sweep

FAKE = "tests.jobs.fake_stage:run_stage"


def test_cancel_of_a_folder_without_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cancel_mod.main([str(tmp_path)]) == 2 and "jobs.jsonl" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("parent_ignores_sigint", [False, True], ids=["foreground", "sigint-ignored"])
def test_cancel_a_local_pipeline_then_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             parent_ignores_sigint: bool) -> None:
    sweep = tmp_path / "sw"
    monkeypatch.setenv("FAKE_STEP_S", "0.5")
    # A sweep submitted from a shell's background job (`make demo &`, nohup) starts its local pipeline with
    # SIGINT ignored, inherited; the cancel must stop it all the same (it once ran on to the end).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if parent_ignores_sigint else None
    try:
        # 60 steps of 0.5 s: the running task is still running when the cancel arrives, however loaded the
        # machine (4 steps, 2 s, finished first once while another benchmark ran beside the suite)
        run_sweep("tiny", [f"sweep_dir={sweep}", "data.root=/d", "cluster=local_executor", "report.enabled=false",
                           "train.max_steps=60"],
                  runner=FAKE,
                  printer=lambda *_: None)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    t0 = time.time()
    while not any(r.state == "RUNNING" for r in collect(sweep)[0]):
        assert time.time() - t0 < 60
        time.sleep(0.2)
    cancelled = cancel_mod.cancel(sweep)
    assert len(cancelled) == 1 and cancelled[0].startswith("local:")
    t0 = time.time()
    while not finished(*collect(sweep)):
        assert time.time() - t0 < 60, [(r.point, r.state) for r in collect(sweep)[0]]
        time.sleep(0.2)
    rows, _ = collect(sweep)
    assert {r.state for r in rows} <= {"CANCELLED"} and not any((Path(r.run_dir) / "status.json").exists()
                                                                 for r in rows)
    assert cancel_mod.cancel(sweep) == []  # nothing left to cancel
    monkeypatch.setenv("FAKE_STEP_S", "0")
    sub = run_resume(sweep, runner=FAKE, printer=lambda *_: None)
    assert len(sub.job_ids) == 6
    t0 = time.time()
    while not finished(*collect(sweep)):
        assert time.time() - t0 < 120
        time.sleep(0.3)
    assert all(r.state == "DONE" for r in collect(sweep)[0])


def test_cancel_does_not_signal_a_process_that_took_a_dead_pipelines_pid(tmp_path: Path) -> None:
    """The pipeline died without cleanup and its pid was reused: simclr-cancel sent SIGINT to that process."""
    link = tmp_path / "sleep"
    link.symlink_to(shutil.which("sleep") or "/bin/sleep")
    proc = subprocess.Popen([str(link), "30"])
    try:
        pid = str(proc.pid)
        (tmp_path / "local").mkdir()
        # recorded start times (tick 1 after boot) that are not this process's: a pipeline long gone
        (tmp_path / "local" / f"{pid}.json").write_text(json.dumps(
            {"job_id": pid, "pid": proc.pid, "pid_start": 1, "tasks": {"pretrain/a": {"state": "RUNNING"}}}))
        (tmp_path / "jobs.jsonl").write_text(json.dumps(
            {"key": "pretrain/a", "job_id": f"{pid}:0", "executor": "local", "pipeline": pid,
             "pipeline_start": 1}) + "\n")
        assert cancel_mod.cancel(tmp_path) == []
        time.sleep(0.2)
        assert proc.poll() is None  # not signalled
    finally:
        proc.kill()
        proc.wait()


def test_jobs_scancel_refuses_are_not_reported_as_cancelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A labmate's array in a shared sweep folder: scancel refuses it, and cancel said it was cancelled."""
    from jobs.sweep.manifest import JobRecord, append_jobs
    from jobs.sweep.queue import JobState

    append_jobs(tmp_path, [JobRecord(key="pretrain/a", job_id="300_0", executor="slurm", user="alice"),
                           JobRecord(key="pretrain/b", job_id="301_0", executor="slurm", user="bob")])
    monkeypatch.setattr(submit_mod, "job_states", lambda d, recs, **kw: {
        "300_0": JobState("300_0", "RUNNING"), "301_0": JobState("301_0", "RUNNING")})
    calls: list[list[str]] = []

    def scancel(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(
            cmd, 1, "", "scancel: error: Kill job error on job id 300: Access/permission denied\n")

    monkeypatch.setattr(cancel_mod.subprocess, "run", scancel)
    assert cancel_mod.cancel(tmp_path) == ["301"] and calls == [["scancel", "300", "301"]]
    assert "scancel refused 300" in capsys.readouterr().err
