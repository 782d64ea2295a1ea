"""``resume``: what it picks (the selection logic is jobs.sweep.submit.plan, tested in test_submit.py), its
dry run, and its errors. The cluster version (a task cancelled by hand) is in test_sweep_cluster.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import resume as resume_mod
from jobs.sweep.manifest import JobRecord, Manifest, Task, append_jobs, write_manifest


def _sweep(tmp_path: Path) -> Path:
    tasks = []
    for key, parent in [("pretrain/a", None), ("finetune/a1", "pretrain/a"), ("pretrain/b", None),
                        ("finetune/b1", "pretrain/b")]:
        run = tmp_path / "runs" / key
        tasks.append(Task(key=key, stage=key.split("/")[0], point=key, seed=0, hash="0" * 8, run_dir=str(run),
                          parent=parent, axes={}, overrides=[], config={"run_dir": str(run)}))
    write_manifest(tmp_path, Manifest(name="t", sweep_dir=str(tmp_path), definition={},
                                      cluster={"executor": "local"}, stages=["pretrain", "finetune"], tasks=tasks))
    for key in ("pretrain/a", "finetune/a1", "pretrain/b"):
        (tmp_path / "runs" / key).mkdir(parents=True)
        (tmp_path / "runs" / key / "status.json").write_text(json.dumps({"state": "done"}))
    # the local pipeline that ran finetune/b1 is gone (pid 0 never runs): the task is lost
    append_jobs(tmp_path, [JobRecord(key="finetune/b1", job_id="0:3", executor="local", pipeline="0")])
    return tmp_path


def test_resume_picks_exactly_the_not_done_tasks(tmp_path: Path) -> None:
    p = resume_mod.resume_plan(_sweep(tmp_path))
    assert [t.key for t in p.submit] == ["finetune/b1"] and not p.parent_key and not p.parent_job
    assert sorted(p.done) == ["finetune/a1", "pretrain/a", "pretrain/b"]


def test_resume_dry_run_submits_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = _sweep(tmp_path)
    assert resume_mod.main([str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 to submit" in out and "finetune/b1" in out
    assert len((sweep / "jobs.jsonl").read_text().splitlines()) == 1


def test_resume_of_a_folder_that_is_not_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert resume_mod.main([str(tmp_path)]) == 2 and "manifest.json" in capsys.readouterr().err


def test_resume_refuses_to_plan_when_the_queue_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A busy controller (squeue times out) must not make resume resubmit tasks that are running."""
    import subprocess

    from jobs.sweep import queue as slurm_queue

    sweep_dir = _sweep(tmp_path)
    append_jobs(sweep_dir, [JobRecord(key="finetune/b1", job_id="7_0", executor="slurm")])

    def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        if cmd[0] in ("sacct", "squeue"):
            raise subprocess.TimeoutExpired(cmd, 60)
        raise AssertionError(f"nothing may be submitted or cancelled: {cmd}")

    monkeypatch.setattr(slurm_queue, "slurm_available", lambda: True)
    monkeypatch.setattr(slurm_queue.subprocess, "run", run)
    assert resume_mod.main([str(sweep_dir)]) == 2
    assert "cannot read SLURM's queue (squeue did not answer" in capsys.readouterr().err


def test_resume_of_a_moved_sweep_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its manifest names run folders at the old place: resume found none done and queued everything again."""
    _sweep(tmp_path / "old")
    (tmp_path / "old").rename(tmp_path / "new")
    assert resume_mod.main([str(tmp_path / "new"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"written for the sweep folder {tmp_path / 'old'}" in err and "Move the folder back" in err
