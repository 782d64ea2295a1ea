"""benchmarks.data_pipeline --quick runs end to end and writes the result fields (no speed asserted)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.data_pipeline import main

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FIELDS = {"name", "value", "unit", "baseline", "baseline_value", "ratio", "goal", "date", "machine", "per_size",
          "min_ratio", "workers", "batch", "threads", "quick"}  # fmt: skip


def test_quick_run_writes_result(tmp_path: Path) -> None:
    name = f"data_pipeline_smoke_{os.getpid()}"
    out = RESULTS / f"{name}.json"
    try:
        assert main(["--quick", "--name", name, "--workdir", str(tmp_path)]) == 0
        record = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    assert FIELDS <= set(record)
    assert record["name"] == name and record["unit"] == "pairs/s/core" and record["quick"] is True
    assert set(record["per_size"]) == {"32", "32rgb", "96"}
    for v in record["per_size"].values():
        assert v["ours_pairs_per_s_per_core"] > 0 and v["imagefolder_pairs_per_s_per_core"] > 0
    assert list(tmp_path.iterdir()) == []  # the work files are removed
