"""The cost before the queue: a throughput table from measured benchmark results only, images per task by the
loop's rule, allocation and estimated device-hours per stage, and a warning where the time limit cannot hold it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import sweep as sweep_mod
from jobs.cli.sweep import build_manifest
from jobs.sweep.cost import Throughput, gpu_kind, measured, report, stage_costs
from jobs.sweep.expand import compose_sweep, sweep_from_dict


def _write(d: Path, name: str, rec: dict[str, Any]) -> None:
    (d / name).write_text(json.dumps(rec))


def test_the_table_holds_what_was_measured_and_nothing_else(tmp_path: Path) -> None:
    _write(tmp_path, "train_step_gpu.json", {"unit": "images/s", "value": 4000.0, "image_size": 32, "device": "cuda",
                                              "machine": "Xeon, 16 cores, NVIDIA H200",
                                              "model": "ResNet-18 CIFAR stem, width 1.0, 3-layer head -> 128"})
    _write(tmp_path, "train_step.json", {"unit": "images/s", "value": 600.0, "image_size": 32, "device": "cpu",
                                          "model": "ResNet-18 CIFAR stem, width 0.25, 3-layer head", "quick": True})
    _write(tmp_path, "gpu_step.json", {"value": 1500.0, "image_size": 224, "device": "NVIDIA H100 80GB HBM3",
                                        "model": "resnet50 width 1.0"})
    table = measured(tmp_path)
    assert table == {
        (18, 1.0, False, 32, "H200"): Throughput(4000.0, "train_step_gpu.json (model step, ?)", fed=False),
        # gpu_step counts pairs of views: two views per image
        (50, 1.0, False, 224, "H100 80GB HBM3"): Throughput(3000.0, "gpu_step.json (fed, ?)", fed=True),
    }  # the quick (smoke) record is no measurement
    assert measured(tmp_path / "none") == {}
    assert gpu_kind("NVIDIA H200") == "H200" and gpu_kind("cpu") == "cpu" and gpu_kind("a100") == "A100"


def _sweep(tmp_path: Path, cluster: dict[str, Any], pre: list[str], ft: list[str]) -> Any:
    return sweep_from_dict({
        "name": "c", "sweep_dir": str(tmp_path / "sw"), "cluster": cluster,
        "overrides": [f"data.root={tmp_path / 'nodata'}", "model.depth=18", "model.width=1.0", "data.image_size=32"],
        "stages": {"pretrain": {"grid": [{}], "overrides": pre},
                   "finetune": {"grid": [{"axes": {"finetune.label_fraction": [0.01]}}], "overrides": ft}},
        "estimate": {"train_samples": 50000}})


GPU = {"nodes": 1, "tasks_per_node": 2, "gpus_per_node": 2, "gpu_kind": "H200", "time_min": 60, "max_num_timeout": 2}
TABLE = {(18, 1.0, False, 32, "H200"): Throughput(1000.0, "test", fed=True)}


def test_device_hours_are_the_views_the_loop_trains_over_the_measured_rate(tmp_path: Path) -> None:
    manifest, profiles = build_manifest(_sweep(tmp_path, GPU, ["train.epochs=3", "train.batch_size=512"],
                                               ["train.epochs=10", "train.batch_size=64"]))
    pre, ft = stage_costs(manifest, profiles.__getitem__, TABLE, None)
    assert pre.costs[0].views is None  # no fallback given here: the samples are unknown
    from jobs.sweep.cost import DataSizes

    pre, ft = stage_costs(manifest, profiles.__getitem__, TABLE, DataSizes(50000))
    assert pre.costs[0].views == 3 * (50000 // 512) * 512 * 2  # whole batches, two views
    assert ft.costs[0].views == 10 * (500 // 64) * 64  # 1% of 50,000 labels
    assert pre.estimate_h is not None and math.isclose(pre.estimate_h, pre.costs[0].views / 1000 / 3600)
    assert (pre.devices, pre.allocation_h, pre.attempts) == (2, 2.0, 3)
    lines, warnings = report([pre, ft])
    assert any(line.split()[1:3] == ["pretrain", "1"] and "GPU-h" in line for line in lines)
    assert warnings == []  # about 5 GPU-minutes on 2 GPUs: within 60 min x 3 attempts


def test_a_task_the_time_limit_cannot_hold_is_warned_about(tmp_path: Path) -> None:
    manifest, profiles = build_manifest(_sweep(tmp_path, {**GPU, "time_min": 5, "max_num_timeout": 1},
                                               ["train.epochs=100", "train.batch_size=512"], []))
    from jobs.sweep.cost import DataSizes

    _, warnings = report(stage_costs(manifest, profiles.__getitem__, TABLE, DataSizes(50000)))
    assert len(warnings) == 1 and warnings[0].startswith("stage pretrain: pretrain/")
    assert "5 min x 2 attempts" in warnings[0]


@pytest.mark.parametrize(("cluster", "why"), [
    ({**GPU, "gpu_kind": "A100"}, "no throughput measured for R18 1x at 32 px on A100"),
    ({**GPU, "gpu_kind": None}, "cluster profile key gpu_kind is not set"),
])
def test_an_unmeasured_configuration_is_unknown_never_guessed(tmp_path: Path, cluster: dict[str, Any],
                                                              why: str) -> None:
    manifest, profiles = build_manifest(_sweep(tmp_path, cluster, [], []))
    from jobs.sweep.cost import DataSizes

    costs = stage_costs(manifest, profiles.__getitem__, TABLE, DataSizes(50000))
    assert all(s.estimate_h is None for s in costs)
    lines, warnings = report(costs)
    assert f"unknown: {why}" in lines[2] and warnings == []


def test_the_dry_run_prints_the_cost_of_every_stage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert sweep_mod.main(["simclrv2_cifar10", f"sweep_dir={tmp_path / 'c'}", "cluster.gpu_kind=H200",
                           "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = {line.split()[1]: line for line in out if line.startswith("#   pretrain") or
           line.startswith("#   linear_eval")}
    # the measured R18 1x 32 px H200 step (benchmarks/results/train_step_gpu.json): 97 steps x 1000 epochs x 512
    # images x 2 views / 40,884 views/s
    assert "0.67 GPU-h (model step only: a floor)" in row["pretrain"]
    assert "1 x 1" in row["pretrain"] and "1440 min" in row["pretrain"] and "24.0 / 264" in row["pretrain"]
    # the demo's data root need not exist (a fresh machine): its training samples are stated
    assert sweep_mod.main(["demo", f"sweep_dir={tmp_path / 'd'}", f"data.root={tmp_path / 'none'}",
                           "estimate.train_samples=60000", "--dry-run"]) == 0
    demo = capsys.readouterr().out
    assert "# cost before the queue" in demo and "no throughput measured for R18 0.25x at 20 px on cpu" in demo


def test_a_submission_warns_before_it_queues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.sweep.submit import Submission

    lines: list[str] = []

    def lock_plan_submit(manifest, **kw):  # type: ignore[no-untyped-def]
        lines.append("<submitted>")
        return Submission(submission_id="", job_ids={}, arrays={})

    monkeypatch.setattr(sweep_mod, "lock_plan_submit", lock_plan_submit)
    sweep_mod.run_sweep("simclrv2_cifar10", [f"sweep_dir={tmp_path / 'c'}", "cluster.gpu_kind=H200",
                                             "cluster.time_min=5", "cluster.max_num_timeout=0",
                                             "stages.pretrain.resources.time_min=5",
                                             "stages.pretrain.resources.max_num_timeout=0"], printer=lines.append)
    warn = [i for i, line in enumerate(lines) if line.startswith("[sweep] warning: stage pretrain")]
    assert warn and warn[0] < lines.index("<submitted>")
    assert not any(line.startswith("#   pretrain") for line in lines)  # the table is the dry run's
    assert compose_sweep("simclrv2_cifar10").estimate.train_samples == 50000
