"""Run folders of a manifest found under a sweep folder that was copied or moved."""

from __future__ import annotations

from pathlib import Path

from simclr.runfolder.layout import locate_run_dir, relative_run_dir


def test_a_recorded_run_folder_is_found_under_the_copy() -> None:
    run = "/scratch/me/sweeps/demo/runs/pretrain/r18-0123abcd-s0"
    assert relative_run_dir(run, "/scratch/me/sweeps/demo/") == Path("runs/pretrain/r18-0123abcd-s0")
    assert locate_run_dir(run, "/scratch/me/sweeps/demo", "/home/me/demo") == Path(
        "/home/me/demo/runs/pretrain/r18-0123abcd-s0")
    assert locate_run_dir("runs/x-0-s0", "/anywhere", "/here") == Path("/here/runs/x-0-s0")  # already relative


def test_a_run_folder_outside_the_sweep_folder_stays_as_recorded() -> None:
    assert relative_run_dir("/scratch/me/other/run", "/scratch/me/sweeps/demo") is None
    assert relative_run_dir("/scratch/me/sweeps/demo-2/run", "/scratch/me/sweeps/demo") is None
    assert locate_run_dir("/scratch/other/run", "/scratch/me/sweeps/demo", "/home") == Path("/scratch/other/run")
