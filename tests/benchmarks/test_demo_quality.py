"""benchmarks.demo_quality runs end to end (tiny, --quick) and writes every field issue 8 asks for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks._result as result
from benchmarks import demo_quality


@pytest.mark.slow
def test_quick_run_writes_the_fields(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result, "RESULTS", tmp_path / "results")
    code = demo_quality.main(["--quick", "--seeds", "0", "--data-root", str(tiny_root), "--work", str(tmp_path / "w"),
                              "--threads", "1", "--jobs", "2"])  # the pool path, as the real run
    assert code == 0
    rec = json.loads((tmp_path / "results" / "demo_quality_quick.json").read_text())
    for key in ("name", "value", "unit", "baseline", "baseline_value", "ratio", "goal", "date", "machine",
                "supervised_1pct", "finetune_1pct", "teacher_1pct", "distill_1pct", "seeds"):
        assert key in rec, key
    assert rec["seeds"] == [0]
    assert rec["value"] == pytest.approx(rec["distill_1pct"] - rec["supervised_1pct"], abs=0.01)
    assert all(0 <= rec[k] <= 100 for k in ("supervised_1pct", "finetune_1pct", "distill_1pct"))

    # A change to a later stage's recipe reuses the pretraining run and gets a folder of its own.
    pre_status = (tmp_path / "w" / "quick" / "pretrain" / "status.json").read_text()
    assert demo_quality.main(["--quick", "--seeds", "0", "--data-root", str(tiny_root), "--work", str(tmp_path / "w"),
                              "--threads", "1", "--jobs", "1", "--distill-epochs", "7"]) == 0
    assert (tmp_path / "w" / "quick" / "pretrain" / "status.json").read_text() == pre_status
    later = sorted(p.name for p in (tmp_path / "w" / "quick").iterdir() if (p / "finetune-s0").is_dir())
    assert len(later) == 2, later


@pytest.mark.slow
def test_quick_run_takes_the_memory_axis(tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--memory-size 0 64 --memory-budget steps: a pretraining run per size (equal steps), each fine-tuned and
    distilled; the headline is the first size's, every size's figures in by_memory."""
    monkeypatch.setattr(result, "RESULTS", tmp_path / "results")
    assert demo_quality.main(["--quick", "--seeds", "0", "--data-root", str(tiny_root), "--work", str(tmp_path / "w"),
                              "--threads", "1", "--jobs", "1", "--memory-size", "0", "64",
                              "--memory-budget", "steps"]) == 0
    rec = json.loads((tmp_path / "results" / "demo_quality_quick.json").read_text())
    assert rec["memory_size"] == 0 and sorted(rec["by_memory"]) == ["0", "64"]
    assert rec["by_memory"]["0"]["finetune_1pct"] == rec["finetune_1pct"]
    runs = {p.parent.parent.name: json.loads(p.read_text()) for p in (tmp_path / "w").glob("*/pretrain/config.json")}
    assert {k: v["pretrain"]["memory_size"] for k, v in runs.items()} == {"quick": 0, "quick-mem64": 64}
    assert len({v["train"]["max_steps"] for v in runs.values()}) == 1  # equal steps
    for size in ("0", "64"):
        assert 0 <= rec["by_memory"][size]["distill_1pct"] <= 100


@pytest.mark.slow
def test_memory_comparison_at_equal_wall_time(tiny_root: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--memory-size 0 8 --no-distill with a budget: the run without memory gets the budget's steps; the run with
    memory the steps that take the same wall time, by the ratio of their step times (timed runs of each, its
    queue full); no distillation runs, and demo_quality_memory pairs the fine-tuned gains by seed."""
    monkeypatch.setattr(result, "RESULTS", tmp_path / "results")
    work = tmp_path / "w"
    argv = ["--quick", "--budget-min", "0.02", "--seeds", "0", "1", "--data-root", str(tiny_root), "--work", str(work),
            "--threads", "1", "--jobs", "1", "--memory-size", "0", "8", "--memory-momentum", "0.9",
            "--memory-positive", "memory", "--calibrations", "1", "--no-distill"]
    assert demo_quality.main(argv) == 0
    assert not (tmp_path / "results" / "demo_quality_quick.json").exists()  # its headline is the distilled student
    rec = json.loads((tmp_path / "results" / "demo_quality_memory_quick.json").read_text())
    calib = {str(p.parent.relative_to(work)): json.loads(p.read_text()) for p in work.glob("*/calibrate*/config.json")}
    mem_dir = "quick-mem8-eqtime-m0.9-posmemory"
    assert {k: (v["pretrain"]["memory_size"], v["pretrain"]["memory_momentum"], v["pretrain"]["memory_positive"],
                v["train"]["max_steps"]) for k, v in calib.items()} == {
        # timed after 4 warm-up steps, and the memory's after its queue of 8 is full too (1 step of 32)
        "quick/calibrate": (0, 0.999, "online", 8), f"{mem_dir}/calibrate-none-0": (0, 0.999, "online", 8),
        f"{mem_dir}/calibrate-0": (8, 0.9, "memory", 9)}
    runs = {p.parent.parent.name: json.loads(p.read_text()) for p in work.glob("*/pretrain/config.json")}
    steps = {size: runs[name]["train"]["max_steps"] for name, size in (("quick", "0"), (mem_dir, "8"))}
    cal = rec["by_memory"]["8"]["calibration"]
    assert steps["8"] == max(1, int(steps["0"] / (cal["step_s_memory"][0] / cal["step_s_none"][0])))
    assert {s: rec["by_memory"][s]["pretrain_steps"] for s in steps} == steps
    assert not list(work.rglob("distill-*"))
    ft = {s: rec["by_memory"][s]["per_seed"]["finetune_1pct"] for s in ("0", "8")}
    diffs = [m - n for m, n in zip(ft["8"], ft["0"])]
    assert rec["value"] == pytest.approx(sum(diffs) / 2, abs=0.01)
    assert rec["comparisons"]["8"]["gain_difference"] == rec["value"]
    assert rec["baseline_value"] == pytest.approx(
        sum(f - s for f, s in zip(ft["0"], rec["supervised_1pct"])) / 2, abs=0.01)
    assert "n=2 seeds" in rec["comparisons"]["8"]["label"]
    assert (rec["comparisons"]["8"]["pretrain_wall_s"], rec["comparisons"]["8"]["pretrain_wall_s_without"]) == (
        rec["by_memory"]["8"]["pretrain_wall_s"], rec["by_memory"]["0"]["pretrain_wall_s"])
    assert rec["memory_budget"] == "time" and "distill_1pct" not in rec["by_memory"]["8"]

    # A rerun reuses every run: the same steps, and the calibration read again from its runs' logs.
    assert demo_quality.main(argv) == 0
    again = json.loads((tmp_path / "results" / "demo_quality_memory_quick.json").read_text())
    assert again["by_memory"] == rec["by_memory"] and again["value"] == rec["value"]


def test_no_distill_is_for_the_memory_comparison_only() -> None:
    with pytest.raises(SystemExit):
        demo_quality.main(["--quick", "--no-distill"])
