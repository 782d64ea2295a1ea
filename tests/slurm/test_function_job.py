"""A plain function job through submitit on the real local SLURM cluster."""

from __future__ import annotations

import os
import sys
from typing import Any

import cloudpickle
import pytest

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process cannot import this module

pytestmark = pytest.mark.cluster


def _add(a: int, b: int) -> dict[str, Any]:
    """Runs on a compute node: the value plus where and under which job id it ran."""
    return {"sum": a + b, "node": os.environ["SLURMD_NODENAME"], "job_id": os.environ["SLURM_JOB_ID"]}


def test_function_job_returns_its_value(make_executor: Any, wait_done: Any, slurm_cluster: Any) -> None:
    job = make_executor().submit(_add, 2, 40)
    wait_done(job, 120)
    out = job.result()
    assert out["sum"] == 42
    assert out["node"] in slurm_cluster.nodes
    assert out["job_id"] == job.job_id
