"""Benchmark results: one JSON file per benchmark in benchmarks/results/NAME.json (issue 2's fields)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """A short description of where the figure was measured (CPU model, cores, GPU if any)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return desc


def write_result(
    name: str,
    value: float,
    unit: str,
    baseline: str,
    baseline_value: float | None,
    goal: str,
    **extra: Any,
) -> Path:
    """Write benchmarks/results/NAME.json atomically and return its path.

    ``ratio`` = value / baseline_value (None without a baseline). ``goal`` says in words what is wanted,
    e.g. ">= 1.3x lightly". ``extra`` holds any other figures (per-size numbers, settings).
    """
    ratio = (value / baseline_value) if baseline_value else None
    record = {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        "goal": goal,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        **extra,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, out)
    return out
