"""A cancelled job ends in a clean submitit error within bounded time (needs accounting: without slurmdbd,
submitit's sacct polling never sees the end and ``result()`` hangs)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from submitit.core.utils import UncompletedJobError

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process cannot import this module

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _sleep_forever(marker: str) -> None:
    Path(marker).write_text("started")
    time.sleep(3600)


def test_cancelled_job_raises_uncompleted_job_error(make_executor: Any, wait_done: Any, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    job = make_executor().submit(_sleep_forever, str(marker))
    deadline = time.monotonic() + 120
    while not marker.exists():  # cancel a RUNNING job, not a pending one
        assert time.monotonic() < deadline, f"job {job.job_id} did not start (state {job.state})"
        time.sleep(0.5)
    job.cancel()
    wait_done(job, 60)
    assert job.state.startswith("CANCELLED"), job.state
    with pytest.raises(UncompletedJobError, match=job.job_id):
        job.result()
