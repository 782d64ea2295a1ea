"""``status``: one row per task from the run folders + SLURM's states, a summary, the live view's end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.cli import status as status_cli
from jobs.sweep import status as status_mod
from jobs.sweep import submit as submit_mod
from jobs.sweep.manifest import JobRecord, Manifest, Task, append_jobs, write_manifest
from jobs.sweep.queue import JobState


def _sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slurm: dict[str, JobState]) -> Path:
    keys = ["pretrain/a-00000000-s0", "pretrain/b-00000000-s0", "finetune/a1-00000000-s0", "finetune/b1-00000000-s0",
            "finetune/c1-00000000-s0"]
    tasks = []
    for k in keys:
        stage, name = k.split("/")
        run = tmp_path / "runs" / stage / name
        tasks.append(Task(key=k, stage=stage, point=name.split("-")[0], seed=0, hash="0" * 8, run_dir=str(run),
                          parent=None, axes={}, overrides=[], config={}))
    write_manifest(tmp_path, Manifest(name="t", sweep_dir=str(tmp_path), definition={}, cluster={},
                                      stages=["pretrain", "finetune"], tasks=tasks))
    a, b, a1, b1, _ = (Path(t.run_dir) for t in tasks)
    for run in (a, b, a1, b1):
        run.mkdir(parents=True)
    (a / "status.json").write_text(json.dumps({"state": "done", "step": 40, "total_steps": 40,
                                               "final": {"knn_top1": 71.5}}))
    (b / "progress.json").write_text(json.dumps({"step": 10, "total_steps": 40, "restarts": 1}))
    (b / "metrics.jsonl").write_text(
        json.dumps({"step": 10, "split": "train", "name": "loss", "value": 2.5}) + "\n"
        + json.dumps({"step": 10, "split": "val", "name": "knn_top1", "value": 55.0}) + "\n"
        + '{"step": 11, "split": "tra')  # torn last line
    (a1 / "status.json").write_text(json.dumps({"state": "failed", "reason": "RuntimeError: boom"}))
    append_jobs(tmp_path, [JobRecord(key=k, job_id=f"5_{i}", executor="slurm", stage=k.split("/")[0])
                           for i, k in enumerate(keys[:4])])
    append_jobs(tmp_path, [JobRecord(key=None, job_id="7", executor="slurm", stage="report")])
    monkeypatch.setattr(submit_mod, "query", lambda ids, **kw: {i: slurm.get(i, JobState(i, "UNKNOWN")) for i in ids})
    return tmp_path


STATES = {
    "5_0": JobState("5_0", "COMPLETED"),
    "5_1": JobState("5_1", "RUNNING", requeues=1),
    "5_2": JobState("5_2", "FAILED", exit_code="1:0"),
    "5_3": JobState("5_3", "PENDING", "Dependency"),
    "7": JobState("7", "PENDING", "Dependency"),
}


def test_rows_combine_run_folders_and_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = _sweep(tmp_path, monkeypatch, STATES)
    rows, report = status_mod.collect(sweep)
    by = {r.point: r for r in rows}
    assert by["a"].state == "DONE" and (by["a"].step, by["a"].total_steps) == (40, 40)
    assert (by["a"].metric, by["a"].value) == ("knn_top1", 71.5)
    assert by["b"].state == "RUNNING" and by["b"].restarts == 1 and by["b"].step == 10
    assert (by["b"].metric, by["b"].value) == ("val/knn_top1", 55.0)  # the torn line is skipped
    assert by["a1"].state == "FAILED" and "boom" in by["a1"].reason
    assert by["b1"].state == "PENDING" and by["b1"].reason == "Dependency"
    assert by["c1"].state == "NOT_SUBMITTED" and by["c1"].job_id == "-"
    assert report is not None and report.state == "PENDING" and report.job_id == "7"
    assert not status_mod.finished(rows, report)
    line = status_mod.summary(rows, report)
    assert line.startswith("5 tasks: 1 done, 1 running, 1 pending, 1 failed, 1 not_submitted")
    assert "report pending (7)" in line


def test_table_and_json_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    sweep = _sweep(tmp_path, monkeypatch, STATES)
    assert status_cli.main([str(sweep)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["STAGE", "POINT", "SEED", "STATE", "RESTARTS", "PROGRESS", "METRIC", "JOB", "RUN"]
    assert len(out) == 1 + 5 + 1 + 1  # header, tasks, report, summary
    assert "runs/pretrain/b-00000000-s0" in out[2] and "10/40 (25%)" in out[2]
    assert status_cli.main([str(sweep), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["state"] for t in data["tasks"]] == ["DONE", "RUNNING", "FAILED", "PENDING", "NOT_SUBMITTED"]


def test_watch_ends_when_everything_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ended = {k: JobState(k, "CANCELLED") for k in ("5_1", "5_3")} | {"5_0": STATES["5_0"], "5_2": STATES["5_2"],
                                                                     "7": JobState("7", "COMPLETED")}
    sweep = _sweep(tmp_path, monkeypatch, ended)
    assert status_cli.main([str(sweep), "--watch", "0.1"]) == 1  # ended, not all done
    assert "report completed" in capsys.readouterr().out


def test_not_a_sweep_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert status_cli.main([str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


@pytest.mark.parametrize("state", ["SUSPENDED", "REQUEUE_HOLD", "QUERY_FAILED"])
def test_a_report_that_will_still_run_is_not_the_end(state: str) -> None:
    """A suspended or held report job (or one whose state could not be read) ended `status --watch`."""
    done = status_mod.Row("pretrain", "a", 0, "DONE", "COMPLETED", "", 0, None, None, "", None, "5_0", "/r")
    report = status_mod.Row("report", "report", 0, state, state, "", 0, None, None, "", None, "7", "/s/report")
    assert not status_mod.finished([done], report)
    assert status_mod.finished([done], status_mod.Row(**{**report.__dict__, "state": "COMPLETED"}))


def test_a_copied_sweep_folder_reads_its_own_run_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    sweep = _sweep(tmp_path / "cluster", monkeypatch, STATES)
    copy = tmp_path / "laptop" / "sweep"
    shutil.copytree(sweep, copy)
    shutil.rmtree(sweep)  # the manifest still names these run folders
    rows, report = status_mod.collect(copy)
    by = {r.point: r for r in rows}
    assert by["a"].state == "DONE" and (by["a"].metric, by["a"].value) == ("knn_top1", 71.5)
    assert by["b"].step == 10 and by["a1"].reason == "RuntimeError: boom"
    assert all(r.run_dir.startswith(str(copy)) for r in rows)
    assert report is not None and report.run_dir == str(copy / "report")
