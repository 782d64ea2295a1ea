"""``map_array`` with ``slurm_array_parallelism``: one sbatch array whose running tasks never exceed the limit."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process cannot import this module

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

N_TASKS = 6
LIMIT = 2


def _square_and_log(i: int, log_dir: str, hold_s: float) -> int:
    """Array task: records its own [start, end] wall-clock interval (inside the task) and returns i*i."""
    start = time.time()
    time.sleep(hold_s)  # long enough that tasks WOULD overlap without the limit (the nodes have 12 CPUs)
    end = time.time()
    record = {"i": i, "start": start, "end": end, "array_task": os.environ.get("SLURM_ARRAY_TASK_ID")}
    Path(log_dir, f"{i}.json").write_text(json.dumps(record))
    return i * i


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Largest number of half-open intervals [start, end) that contain a common instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # ends sort before starts
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_max_overlap_counts_simultaneous_intervals() -> None:
    assert max_overlap([(0, 2), (1, 3), (2, 4)]) == 2  # touching intervals do not overlap
    assert max_overlap([(0, 5), (1, 3), (2, 4)]) == 3


def test_map_array_respects_parallelism_limit(make_executor: Any, wait_done: Any, tmp_path: Path) -> None:
    log_dir = tmp_path / "intervals"
    log_dir.mkdir()
    executor = make_executor(slurm_array_parallelism=LIMIT)
    jobs = executor.map_array(_square_and_log, range(N_TASKS), [str(log_dir)] * N_TASKS, [2.0] * N_TASKS)
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "map_array must submit ONE array job"
    for job in jobs:
        wait_done(job, 180)
    assert [job.result() for job in jobs] == [i * i for i in range(N_TASKS)]
    records = [json.loads(p.read_text()) for p in sorted(log_dir.glob("*.json"))]
    assert sorted(r["i"] for r in records) == list(range(N_TASKS))
    assert sorted(int(r["array_task"]) for r in records) == list(range(N_TASKS))
    peak = max_overlap([(r["start"], r["end"]) for r in records])
    assert peak <= LIMIT, f"{peak} array tasks ran at once, limit {LIMIT}: {records}"
