"""The run folder's readers: status, progress and config, each missing -> None, damaged -> None with a warning."""

from __future__ import annotations

import json
from pathlib import Path

from simclr.runfolder.read import is_done, read_config, read_json_object, read_progress, read_status
from simclr.runfolder.write import RunFolder


def test_run_folder_readers(tmp_path: Path) -> None:
    assert not is_done(tmp_path) and read_progress(tmp_path) is None
    (tmp_path / "progress.json").write_text(json.dumps({"step": 3, "total_steps": 9}))
    (tmp_path / "status.json").write_text(json.dumps({"state": "failed"}))
    assert read_progress(tmp_path) == {"step": 3, "total_steps": 9} and not is_done(tmp_path)
    (tmp_path / "status.json").write_text(json.dumps({"state": "done"}))
    assert is_done(tmp_path)
    (tmp_path / "status.json").write_text("{not json")
    assert not is_done(tmp_path)


def test_damage_is_named_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text("[1, 2]")
    warnings: list[str] = []
    assert read_status(tmp_path, warnings) is None
    assert warnings == [f"{tmp_path / 'status.json'}: expected a JSON object, got list; ignored"]
    (tmp_path / "progress.json").write_bytes(b"\xff\xfe")
    assert read_progress(tmp_path) is None  # no list: silent
    assert read_progress(tmp_path, warnings) is None and "unreadable JSON" in warnings[-1]
    assert read_json_object(tmp_path / "nothing.json", warnings) is None and len(warnings) == 2


def test_config_json_else_yaml(tmp_path: Path) -> None:
    assert read_config(tmp_path) is None
    (tmp_path / "config.yaml").write_text("stage: pretrain\nseed: 3\n")
    assert read_config(tmp_path) == {"stage": "pretrain", "seed": 3}
    (tmp_path / "config.json").write_text("{torn")
    warnings: list[str] = []
    assert read_config(tmp_path, warnings) == {"stage": "pretrain", "seed": 3}
    assert "config.json: unreadable JSON" in warnings[0]
    assert read_config(tmp_path, names={"config.json"}) is None  # told there is no yaml: none read


def test_the_writer_reads_back_what_it_wrote(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "r", stage="finetune")
    run.write_config({"stage": "finetune", "seed": 1})
    run.write_progress(step=2, total_steps=4)
    assert read_config(run.path) == run.read_config() == {"stage": "finetune", "seed": 1}
    assert read_progress(run.path)["step"] == run.read_progress()["step"] == 2  # type: ignore[index]
    assert not is_done(run.path) and not run.is_done()
    run.write_status("done", final={"test/top1": 50.0})
    assert is_done(run.path) and run.is_done() and read_status(run.path) == run.read_status()
