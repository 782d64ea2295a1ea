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
    """--memory-size 0 64: a pretraining run per size (equal steps), each fine-tuned and distilled; the headline is
    the first size's, every size's figures in by_memory."""
    monkeypatch.setattr(result, "RESULTS", tmp_path / "results")
    assert demo_quality.main(["--quick", "--seeds", "0", "--data-root", str(tiny_root), "--work", str(tmp_path / "w"),
                              "--threads", "1", "--jobs", "1", "--memory-size", "0", "64"]) == 0
    rec = json.loads((tmp_path / "results" / "demo_quality_quick.json").read_text())
    assert rec["memory_size"] == 0 and sorted(rec["by_memory"]) == ["0", "64"]
    assert rec["by_memory"]["0"]["finetune_1pct"] == rec["finetune_1pct"]
    runs = {p.parent.parent.name: json.loads(p.read_text()) for p in (tmp_path / "w").glob("*/pretrain/config.json")}
    assert {k: v["pretrain"]["memory_size"] for k, v in runs.items()} == {"quick": 0, "quick-mem64": 64}
    assert len({v["train"]["max_steps"] for v in runs.values()}) == 1  # equal steps
    for size in ("0", "64"):
        assert 0 <= rec["by_memory"][size]["distill_1pct"] <= 100
