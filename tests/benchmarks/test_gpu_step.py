"""benchmarks.gpu_step runs (tiny, on the CPU) so that it cannot rot before a GPU machine is lent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import benchmarks._result as result
from benchmarks import gpu_step


@pytest.mark.slow
def test_quick_run_writes_both_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result, "RESULTS", tmp_path)
    assert gpu_step.main(["--quick"]) == 0
    rec = json.loads((tmp_path / "gpu_step_quick.json").read_text())
    assert rec["value"] > 0 and rec["baseline_value"] > 0 and rec["model_step_images_per_s"] == rec["baseline_value"]
    assert rec["device"] == "cpu" and rec["image_size"] == 32
