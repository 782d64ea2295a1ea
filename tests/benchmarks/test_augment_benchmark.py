"""benchmarks.augment --quick runs end to end and writes the result fields (no speed asserted)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.augment import main

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FIELDS = {"name", "value", "unit", "baseline", "baseline_value", "ratio", "goal", "date", "machine", "per_size",
          "min_ratio", "batch", "threads", "device", "quick"}  # fmt: skip


def test_quick_run_writes_result() -> None:
    name = f"augment_smoke_{os.getpid()}"
    out = RESULTS / f"{name}.json"
    try:
        assert main(["--quick", "--name", name]) == 0
        record = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    assert FIELDS <= set(record)
    assert record["name"] == name and record["unit"] == "pairs/s" and record["quick"] is True
    assert set(record["per_size"]) == {"32", "96"}
    assert record["value"] > 0 and record["baseline_value"] > 0
    assert abs(record["ratio"] - record["value"] / record["baseline_value"]) < 1e-9
