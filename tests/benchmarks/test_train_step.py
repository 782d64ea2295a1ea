"""benchmarks.train_step --quick runs end to end and writes the result fields (no speed asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"name", "value", "unit", "baseline", "baseline_value", "ratio", "goal", "date", "machine",
          "ratio_best", "batch", "threads", "allocator", "device", "quick"}  # fmt: skip


@pytest.mark.slow
def test_quick_run_writes_result() -> None:
    name = f"train_step_smoke_{os.getpid()}"
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.train_step", "--quick", "--name", name],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        record = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    assert FIELDS <= set(record)
    assert record["name"] == name and record["unit"] == "images/s" and record["quick"] is True
    assert record["value"] > 0
    if record["baseline_value"] is not None:  # lightly installed: both sides measured
        assert record["ratio"] == pytest.approx(record["value"] / record["baseline_value"])
    else:
        assert record["lightly_error"]


@pytest.mark.slow
def test_quick_memory_run_writes_the_step_time_ratio() -> None:
    name = f"train_step_memory_smoke_{os.getpid()}"
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.train_step", "--quick", "--memory", "100", "--name", name],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        record = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    assert FIELDS <= set(record) and record["memory_size"] == 100
    assert record["value"] == pytest.approx(record["step_s_memory"] / record["step_s_plain"], rel=1e-2)
    assert record["images_per_s_memory"] > 0 and record["images_per_s_plain"] > 0
