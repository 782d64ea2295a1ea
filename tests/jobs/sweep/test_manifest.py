"""Sweep folder records: atomic manifest, append-only jobs.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simclr.atomic import atomic_write_text
from jobs.sweep.manifest import (
    JobRecord,
    Manifest,
    Task,
    append_jobs,
    latest_jobs,
    read_jobs,
    read_manifest,
    write_manifest,
)


def _task(key: str, parent: str | None = None) -> Task:
    return Task(key=key, stage=key.split("/")[0], point="p", seed=0, hash="0" * 8, run_dir=f"/r/{key}",
                parent=parent, axes={"a": 1}, overrides=["x=1"], config={"stage": key.split("/")[0]})


def test_manifest_round_trip(tmp_path: Path) -> None:
    m = Manifest(name="s", sweep_dir=str(tmp_path), definition={"k": 1}, cluster={"executor": "slurm"},
                 stages=["pretrain", "finetune"], tasks=[_task("pretrain/a"), _task("finetune/b", "pretrain/a")])
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back.tasks == m.tasks and back.stages == m.stages and back.created > 0
    assert back.children() == {"pretrain/a": ["finetune/b"]}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left behind


def test_missing_or_bad_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{\"tasks\": 3}")
    with pytest.raises(ValueError, match="manifest.json"):
        read_manifest(tmp_path)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    atomic_write_text(path, "old")

    with pytest.raises((TypeError, AttributeError)):  # not text: nothing is written
        atomic_write_text(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_jobs_are_appended_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    append_jobs(tmp_path, [JobRecord(key="a", job_id="1_0"), JobRecord(key="b", job_id="1_1")])
    append_jobs(tmp_path, [JobRecord(key="a", job_id="7_0")])
    with open(tmp_path / "jobs.jsonl", "a") as f:
        f.write('{"key": "b", "job_')  # a writer killed mid-line
    recs = read_jobs(tmp_path)
    assert [r.job_id for r in recs] == ["1_0", "1_1", "7_0"]
    assert {k: r.job_id for k, r in latest_jobs(recs).items()} == {"a": "7_0", "b": "1_1"}
    assert read_jobs(tmp_path / "nothing") == []


def test_an_append_after_a_torn_line_keeps_all_its_records(tmp_path: Path) -> None:
    """A writer killed mid-append left a line without its newline: the next append's first record used to be
    glued to it and lost (a queued task unrecorded: resumed twice, never cancelled)."""
    append_jobs(tmp_path, [JobRecord(key="a", job_id="1_0"), JobRecord(key="b", job_id="1_1")])
    with open(tmp_path / "jobs.jsonl", "a") as f:
        f.write('{"key": "c", "job_')  # a writer killed mid-line
    append_jobs(tmp_path, [JobRecord(key="c", job_id="2_0"), JobRecord(key="d", job_id="2_1")])
    assert [r.job_id for r in read_jobs(tmp_path)] == ["1_0", "1_1", "2_0", "2_1"]
    append_jobs(tmp_path, [JobRecord(key="e", job_id="3_0")])  # a whole last line gets no blank line before it
    assert (tmp_path / "jobs.jsonl").read_text().count("\n\n") == 0
    assert [r.job_id for r in read_jobs(tmp_path)][-1] == "3_0"


def test_a_job_record_reads_back_as_written_and_older_lines_still_read(tmp_path: Path) -> None:
    rec = JobRecord(job_id="12_3", stage="finetune", key="finetune/a", user="alice", array_job_id="12",
                    array_index=3, dependency="afterok:11_0")
    local = JobRecord(job_id="4242:0", stage="pretrain", key="pretrain/p", executor="local", pipeline="4242",
                      pipeline_start=99)
    append_jobs(tmp_path, [rec, local])
    assert read_jobs(tmp_path) == [rec, local]
    assert not rec.job_id.is_local and local.job_id.is_local
    line = json.loads((tmp_path / "jobs.jsonl").read_text().splitlines()[1])
    assert line["key"] == "pretrain/p" and "user" not in line  # unset fields are not written
    # a line from an older writer: no executor (SLURM), a pipeline_start that is not an int (ignored)
    (tmp_path / "jobs.jsonl").write_text('{"job_id": 7, "key": null, "stage": "report", "pipeline_start": "x"}\n')
    (old,) = read_jobs(tmp_path)
    assert (old.job_id, old.key, old.executor, old.pipeline_start) == ("7", None, "slurm", None)
