"""Helpers for the tests that drive the real local SLURM cluster through submitit.

Every test submits through ``submitit.AutoExecutor(cluster="slurm")`` into its own temporary folder (job ids
restart at 1 on a fresh cluster: a reused folder could mix runs), and every wait is bounded: a job that does
not finish in time is cancelled and the test fails with the job's log tail, never hangs.

Job callables live in the test modules, which register themselves with cloudpickle "by value": the job's
Python process then needs no import of the test module (whose name depends on pytest's import mode). For the
same reason the helpers reach the tests as fixtures, not imports.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import submitit

ExecutorFactory = Callable[..., submitit.AutoExecutor]


def new_executor(folder: Path, cluster: Any, max_num_timeout: int = 3, **params: Any) -> submitit.AutoExecutor:
    """An AutoExecutor on the SLURM cluster writing to ``folder``; ``params`` override small test defaults."""
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_num_timeout)
    defaults: dict[str, Any] = {
        "timeout_min": 5,
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": 1,
        "slurm_partition": cluster.default_partition,
    }
    executor.update_parameters(**{**defaults, **params})
    return executor


def log_tail(job: submitit.Job[Any], lines: int = 25) -> str:
    """The last lines of the job's stdout and stderr (for failure messages)."""
    parts = []
    for path in (job.paths.stdout, job.paths.stderr):
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(parts) or f"(no log yet in {job.paths.folder})"


def wait_done(job: submitit.Job[Any], timeout_s: float) -> None:
    """Waits until ``job`` is finished (result written, or SLURM says it ended); cancels it and fails the test
    after ``timeout_s`` seconds. Polls sacct every second (``force_check``) instead of submitit's backoff."""
    deadline = time.monotonic() + timeout_s
    while not job.done(force_check=True):
        if time.monotonic() > deadline:
            state = job.state
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {timeout_s:.0f} s (state {state}); cancelled.\n{log_tail(job)}")
        time.sleep(1.0)


def sacct_states(job_id: str) -> list[str]:
    """Every state SLURM accounting recorded for the job's allocation, one per (re)start (``sacct -D``)."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-D", "-P", "-o", "State", "-j", job_id],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def executor_in(slurm_cluster: Any) -> Callable[..., submitit.AutoExecutor]:
    """``executor_in(folder, max_num_timeout=3, **params)``: an AutoExecutor writing to ``folder``."""
    return lambda folder, max_num_timeout=3, **params: new_executor(folder, slurm_cluster, max_num_timeout, **params)


@pytest.fixture
def make_executor(tmp_path: Path, slurm_cluster: Any) -> ExecutorFactory:
    """``make_executor(max_num_timeout=3, **params)``: a fresh AutoExecutor in this test's own temporary folder."""
    count = iter(range(1000))

    def make(max_num_timeout: int = 3, **params: Any) -> submitit.AutoExecutor:
        return new_executor(tmp_path / f"submitit-{next(count)}", slurm_cluster, max_num_timeout, **params)

    return make


@pytest.fixture(name="wait_done", scope="session")
def _wait_done_fixture() -> Callable[[submitit.Job[Any], float], None]:
    """``wait_done(job, timeout_s)`` (see :func:`wait_done`)."""
    return wait_done


@pytest.fixture(name="sacct_states", scope="session")
def _sacct_states_fixture() -> Callable[[str], list[str]]:
    """``sacct_states(job_id)`` (see :func:`sacct_states`)."""
    return sacct_states
