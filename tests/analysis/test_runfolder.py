from __future__ import annotations

import json
import math
from pathlib import Path

from analysis.runfolder import read_run
from simclr.runfolder.layout import is_run_folder, parse_run_name
from analysis.synthetic import model_config, write_run


def test_parse_run_name() -> None:
    assert parse_run_name("finetune-d18-lf0.01-0123abcd-s2") == ("finetune-d18-lf0.01", "0123abcd", 2)
    assert parse_run_name("my-run") == (None, None, None)
    assert is_run_folder({"metrics.jsonl"}) and not is_run_folder({"manifest.json", "runs"})


def test_done_run_row(tmp_path: Path) -> None:
    f = write_run(tmp_path, stage="finetune", seed=3, model=model_config(depth=50, width=2.0, sk_ratio=0.0625),
                  ft_proj_selector=1, label_fraction=0.1, top1=71.5, top5=90.25, params=123, wall_time_s=7200,
                  world_size=4, device="cuda:0", metric_lines=30)
    rr = read_run(f)
    r = rr.row
    assert rr.warnings == []
    assert (r["stage"], r["seed"], r["state"], r["reason"]) == ("finetune", 3, "done", None)
    assert (r["depth"], r["width"], r["sk_ratio"], r["cifar_stem"]) == (50, 2.0, 0.0625, True)
    assert (r["ft_proj_selector"], r["label_fraction"]) == (1, 0.1)
    assert (r["top1"], r["top5"], r["top1_source"]) == (71.5, 90.25, "final")
    assert r["params"] == 123 and r["gpu_hours"] == 8.0 and r["device_hours"] == 8.0
    assert r["config_id"] == f.name.split("-")[-2] and r["progress"] == 1.0
    assert r["n_metric_lines"] == 32 and r["n_ckpts"] == 1  # 30 while training, 2 from the final evaluation
    assert r["last_ckpt_step"] == 100
    assert r["last:train/top1"] == rr.curves[("train", "top1")][1][-1] and r["last:test/top1"] == 71.5
    assert "best:train/loss" in r and "best:train/lr" not in r  # no "best" learning rate


def test_cpu_run_has_zero_gpu_hours(tmp_path: Path) -> None:
    r = read_run(write_run(tmp_path, stage="supervised", label_fraction=0.1, top1=1.0, device="cpu")).row
    assert r["gpu_hours"] == 0.0 and r["device_hours"] == 1.0


def test_running_and_failed_runs(tmp_path: Path) -> None:
    running = read_run(write_run(tmp_path, stage="finetune", seed=1, ft_proj_selector=1, label_fraction=0.1,
                                 state="running")).row
    assert running["state"] == "running" and "at step 50 of 100" in running["reason"]
    assert running["progress"] == 0.5 and math.isnan(running["top1"])
    failed = read_run(write_run(tmp_path, stage="finetune", seed=2, ft_proj_selector=1, label_fraction=0.1,
                                state="failed", reason="CUDA out of memory")).row
    assert failed["state"] == "failed" and failed["reason"] == "CUDA out of memory"
    queued = read_run(write_run(tmp_path, stage="finetune", seed=3, ft_proj_selector=1, label_fraction=0.1,
                                state="queued")).row
    assert queued["state"] == "running" and "no progress.json" in queued["reason"]


def test_no_config_keeps_stage_from_sweep_layout_and_warns(tmp_path: Path) -> None:
    f = write_run(tmp_path, stage="supervised", seed=4, label_fraction=0.1, top1=50.0, write_config=False)
    rr = read_run(f)
    assert rr.row["has_config"] is False and rr.row["stage"] == "supervised" and rr.row["seed"] == 4
    assert len(rr.warnings) == 1 and str(f) in rr.warnings[0] and "config" in rr.warnings[0]


def test_yaml_config_only(tmp_path: Path) -> None:
    f = write_run(tmp_path, stage="finetune", ft_proj_selector=0, label_fraction=0.01, top1=1.0, config_format="yaml")
    rr = read_run(f)
    assert rr.warnings == [] and rr.row["ft_proj_selector"] == 0 and rr.row["label_fraction"] == 0.01


def test_stage_axes_from_the_finetune_section_and_the_teacher_from_parent(tmp_path: Path) -> None:
    """jobs.config.stage.StageConfig nests ft_proj_selector/label_fraction under "finetune", teacher = parent."""
    t = write_run(tmp_path, stage="finetune", ft_proj_selector=2, label_fraction=0.1, top1=1.0)
    d = write_run(tmp_path, stage="distill", label_fraction=0.1, teacher=str(t), top1=1.0)
    p = write_run(tmp_path, stage="pretrain")
    rt, rd, rp = read_run(t).row, read_run(d).row, read_run(p).row
    assert (rt["ft_proj_selector"], rt["label_fraction"]) == (2, 0.1)
    assert rd["teacher_ref"] == str(t) and rd["teacher_run"] == t.name and math.isnan(rd["ft_proj_selector"])
    assert math.isnan(rp["label_fraction"]) and math.isnan(rp["ft_proj_selector"])  # defaults not applicable


def test_missing_final_metric_falls_back_or_warns(tmp_path: Path) -> None:
    f = write_run(tmp_path, stage="finetune", ft_proj_selector=1, label_fraction=0.1, top1=None)
    rr = read_run(f)
    assert math.isnan(rr.row["top1"]) and rr.row["top1_source"] is None
    assert any(str(f / "status.json") in w and "test/top1" in w for w in rr.warnings)
    with open(f / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 100, "epoch": 9, "stage": "finetune", "split": "test", "name": "top1",
                             "value": 77.0, "time": 1.0}) + "\n")
    rr = read_run(f)
    assert rr.row["top1"] == 77.0 and rr.row["top1_source"] == "metrics"
    assert any("from metrics.jsonl" in w for w in rr.warnings)


def test_damaged_status_and_config_values_warn(tmp_path: Path) -> None:
    f = write_run(tmp_path, stage="finetune", ft_proj_selector=1, label_fraction=0.1, top1=1.0,
                  model=model_config() | {"depth": "fifty"}, config_format="json")
    (f / "status.json").write_text('{"state": "do')
    rr = read_run(f)
    assert rr.row["state"] == "running"
    assert any(str(f / "status.json") in w and "unreadable" in w for w in rr.warnings)
    assert any("model.depth" in w and "'fifty'" in w for w in rr.warnings) and math.isnan(rr.row["depth"])


def test_truncated_metrics_named_in_warning(tmp_path: Path) -> None:
    f = write_run(tmp_path, stage="pretrain", truncate_last_line=True, metric_lines=20)
    rr = read_run(f)
    assert rr.row["n_metric_lines"] == 20
    assert rr.warnings == [f"{f / 'metrics.jsonl'}: truncated last line 21 (58 bytes) ignored"]
