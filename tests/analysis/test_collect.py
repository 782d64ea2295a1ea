from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import BASE_COLUMNS, collect, find_run_folders
from analysis.synthetic import model_config, write_run


def test_find_run_folders_stops_at_run_folders_and_skips_report(tmp_path: Path) -> None:
    a = write_run(tmp_path / "sweep1", stage="pretrain", seed=0)
    b = write_run(tmp_path / "sweep2" / "nested", stage="pretrain", seed=1)
    (a / "sub").mkdir()  # never entered: a is a run folder
    write_run(a / "sub", stage="pretrain", seed=9)
    write_run(tmp_path / "sweep1" / "report", stage="pretrain", seed=7)  # report folders are skipped
    (tmp_path / "empty").mkdir()
    found = [f for f, _ in find_run_folders(tmp_path)]
    assert found == sorted([a, b], key=str)
    assert [f for f, _ in find_run_folders(a)] == [a]  # a run folder as the root


def test_collect_known_sweep(known_sweep: Path) -> None:
    c = collect(known_sweep)
    runs = c.runs
    assert list(runs.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert len(runs) == 24
    assert runs["state"].value_counts().to_dict() == {"done": 22, "running": 1, "failed": 1}
    assert int(runs["usable"].sum()) == 22
    failed = runs[runs["state"] == "failed"].iloc[0]
    assert failed["reason"] == "NaN loss" and not failed["usable"]
    assert c.warnings == []
    # distill students found their teachers and the teacher's numbers
    d = runs[runs["stage"] == "distill"].sort_values("seed")
    assert d["teacher_top1"].tolist() == [70.0, 72.0]
    assert d["teacher_depth"].tolist() == [50, 50] and d["teacher_ft_proj_selector"].tolist() == [1, 1]
    assert d["teacher_state"].tolist() == ["done", "done"]
    # curves: long format, one entry per kept point, only known runs
    assert set(c.curves.columns) == {"run", "split", "name", "step", "value"}
    assert set(c.curves["run"].astype(str)) <= set(runs["path"])
    assert {"loss", "top1", "knn_top1"} <= set(c.curves["name"].astype(str))


def test_teacher_found_by_name_after_the_sweep_moved(tmp_path: Path) -> None:
    t = write_run(tmp_path / "old", stage="finetune", ft_proj_selector=1, label_fraction=0.1, top1=80.0)
    write_run(tmp_path / "old", stage="distill", label_fraction=0.1, teacher=str(t), top1=70.0, model=model_config(width=0.5))
    shutil.move(tmp_path / "old", tmp_path / "new")  # copied off the cluster: absolute path is stale
    runs = collect(tmp_path / "new").runs
    assert runs.loc[runs["stage"] == "distill", "teacher_top1"].tolist() == [80.0]


def test_missing_teacher_warns(tmp_path: Path) -> None:
    write_run(tmp_path, stage="distill", label_fraction=0.1, teacher="/gone/finetune-x-0123abcd-s0", top1=70.0)
    c = collect(tmp_path)
    assert any("teacher run" in w and "not found" in w and "config.json" in w for w in c.warnings)
    assert c.runs["teacher_top1"].isna().all()


def test_duplicate_runs_counted_once(tmp_path: Path) -> None:
    f = write_run(tmp_path / "a", stage="supervised", label_fraction=0.1, top1=50.0)
    shutil.copytree(f, tmp_path / "b" / f.name)
    c = collect([tmp_path / "a", tmp_path / "b"])
    assert len(c.runs) == 2 and int(c.runs["usable"].sum()) == 1
    assert c.runs["duplicate_of"].notna().sum() == 1
    assert any("counted once" in w and f.name in w for w in c.warnings)


def test_mixed_sweeps_warn_with_a_config_file_each(tmp_path: Path) -> None:
    write_run(tmp_path, stage="pretrain", sweep="alpha")
    write_run(tmp_path, stage="pretrain", sweep="beta", seed=1)
    c = collect(tmp_path)
    (w,) = [w for w in c.warnings if "several sweeps" in w]
    assert "'alpha': 1 runs" in w and "'beta': 1 runs" in w and w.count("config.json") == 2


def test_a_sweep_folder_counts_only_the_runs_of_its_manifest(tmp_path: Path) -> None:
    old = write_run(tmp_path / "runs", stage="supervised", label_fraction=0.1, top1=50.0)
    new = write_run(tmp_path / "runs", stage="supervised", label_fraction=0.1, top1=60.0, seed=1)
    assert len(collect(tmp_path).runs) == 2  # no manifest: every run folder
    # the sweep was rerun with a changed grid: the manifest lists only the new point; the old folder stays
    (tmp_path / "manifest.json").write_text(json.dumps({"tasks": [{"run_dir": str(new)}]}))
    c = collect(tmp_path)
    assert c.runs["top1"].tolist() == [60.0] and str(old) not in c.runs["path"].tolist()
    assert any("1 run folder(s) not in its manifest.json" in w for w in c.warnings)
    (tmp_path / "manifest.json").write_text("{")  # unreadable: every folder, with a warning naming the file
    c = collect(tmp_path)
    assert len(c.runs) == 2 and any("manifest.json: unreadable" in w for w in c.warnings)


def test_overlapping_roots_read_once(known_sweep: Path) -> None:
    c = collect([known_sweep, known_sweep / "runs" / "finetune"])
    assert len(c.runs) == 24 and c.runs["path"].is_unique


def test_missing_root_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        collect(tmp_path / "nowhere")


def test_empty_tree(tmp_path: Path) -> None:
    c = collect(tmp_path)
    assert c.runs.empty and list(c.runs.columns) == list(BASE_COLUMNS) and c.curves.empty


def test_workers_give_the_same_table(known_sweep: Path) -> None:
    one = collect(known_sweep).runs
    two = collect(known_sweep, workers=2).runs
    pd.testing.assert_frame_equal(one, two)


def test_a_copied_sweep_folder_gives_the_same_runs_table(known_sweep: Path, tmp_path: Path) -> None:
    """A sweep rsynced off the cluster: its manifest names run folders at the old place (issue 16)."""
    sweep = tmp_path / "cluster" / "sweep"
    shutil.copytree(known_sweep, sweep)
    runs = sorted(str(p) for p in (sweep / "runs").glob("*/*"))
    (sweep / "manifest.json").write_text(json.dumps({"sweep_dir": str(sweep), "tasks": [{"run_dir": r} for r in runs]}))
    here = collect(sweep).runs
    copy = tmp_path / "laptop" / "copy"
    shutil.copytree(sweep, copy)
    shutil.rmtree(sweep)
    there = collect(copy)
    assert len(there.runs) == len(here) == 24 and there.warnings == []
    cols = [c for c in here.columns if c not in ("path", "teacher_path")]
    pd.testing.assert_frame_equal(here[cols].reset_index(drop=True), there.runs[cols].reset_index(drop=True))
    # the report's own writer: runs.csv of the copy reads as the original's, but for where the folders are
    from analysis.report import _write_runs

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    _write_runs(here, tmp_path / "a", []), _write_runs(there.runs, tmp_path / "b", [])
    a, b = (pd.read_csv(tmp_path / d / "runs.csv").drop(columns=["path", "teacher_path"]) for d in ("a", "b"))
    pd.testing.assert_frame_equal(a, b)


def test_a_sweep_folder_written_before_the_jobs_split_still_reads(tmp_path: Path) -> None:
    """Five runs of the demo sweep as the code before issue 17 wrote them (checkpoints left out), copied away
    from the folder its manifest names: the report reads them, and the job records read back."""
    from jobs.sweep.manifest import read_jobs, read_manifest

    sweep = tmp_path / "copied"
    shutil.copytree(Path(__file__).parent / "data" / "sweep-2026-12-03", sweep)
    runs = collect(sweep).runs.set_index("run")
    assert runs["usable"].all() and (runs["converged"] == "true").all()
    assert runs.loc["resnet18_w025-lf0.01-sel0-a27de2ca-s0", "top1"] == 80.68
    assert runs.loc["resnet18_w025-lf0.01-784896a0-s0", "top1"] == 76.63
    student = runs.loc["resnet18_w025-from-resnet18_w025-lf0.01-sel1-47fb2bb7-s0"]
    assert (student["top1"], student["teacher_top1"], student["pretrain_steps"]) == (71.06, 80.19, 234.0)
    assert read_manifest(sweep).sweep_dir == "/tmp/demo-new" and len(read_manifest(sweep).tasks) == 5
    assert sorted(r.key for r in read_jobs(sweep) if r.key) == sorted(t.key for t in read_manifest(sweep).tasks)
