"""A submitit ``Checkpointable`` job requeued three ways on the real cluster, resuming from its own saved state:

- by its time limit: ``timeout_min=1`` with ``slurm_signal_delay_s``: SLURM sends USR2 before the limit, submitit
  calls ``checkpoint()`` and requeues the job itself;
- by ``scontrol requeue <jobid>`` from outside: SIGTERM (which submitit ignores), SIGKILL after KillWait, requeue;
- by preemption: a job in the ``high`` partition needs the node; with ``preempt_send_user_signal`` the victim
  gets USR2 first (checkpoint, requeue), then waits until the preemptor is done.

Each run must end with exactly the result of an uninterrupted run, and its state file must show that a restart
really happened and resumed from a saved step (not from scratch). The three run concurrently (one whole node
each) so that the slow one (the time limit, 1 to 2 minutes) sets the duration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process cannot import this module

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

WAYS = ("time_limit", "scontrol_requeue", "preemption")
# Steps, seconds per step, executor parameters. Time limit: the USR2 comes 5 to 35 s before the 60 s limit
# (slurmctld checks every 30 s and sends early rather than late), so 30 steps of 2 s cannot finish in one run.
PLANS: dict[str, dict[str, Any]] = {
    "time_limit": {"n_steps": 30, "step_s": 2.0, "max_num_timeout": 6,
                   "params": {"timeout_min": 1, "slurm_signal_delay_s": 5}},
    "scontrol_requeue": {"n_steps": 20, "step_s": 1.0, "max_num_timeout": 3, "params": {"timeout_min": 10}},
    # timeout_min large: submitit tells preemption from timeout by elapsed time (FACTS.md).
    "preemption": {"n_steps": 12, "step_s": 1.0, "max_num_timeout": 3, "params": {"timeout_min": 20}},
}
INTERVENE_AT_STEP = 3  # requeue / preempt once this many steps are saved (so there IS state to resume from)
DEADLINE_S = 300


def _advance(acc: int, step: int) -> int:
    """One deterministic step (a 64-bit LCG mixed with the step index): any skipped or repeated step changes
    the final value."""
    return (acc * 6364136223846793005 + 1442695040888963407 + step) % 2**64


def _save_atomic(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)  # a kill mid-save leaves the previous complete state


class StepwiseJob(submitit.helpers.Checkpointable):
    """``n_steps`` steps of ``_advance`` taking ``step_s`` seconds each; the state (step, value, a record of every
    start) is saved to ``state_file`` after each step and is the source of truth on every (re)start. The default
    ``checkpoint()`` (resubmit self) suffices: the object holds no progress of its own."""

    def __init__(self, state_file: str, n_steps: int, step_s: float) -> None:
        self.state_file = state_file
        self.n_steps = n_steps
        self.step_s = step_s

    def __call__(self) -> dict[str, Any]:
        path = Path(self.state_file)
        state = json.loads(path.read_text()) if path.exists() else {"step": 0, "acc": 1, "starts": []}
        state["starts"].append({
            "from_step": state["step"],
            "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "job_id": os.environ.get("SLURM_JOB_ID", ""),
            "node": os.environ.get("SLURMD_NODENAME", ""),
            "time": time.time(),
        })
        _save_atomic(path, state)
        while state["step"] < self.n_steps:
            time.sleep(self.step_s)
            state = {**state, "acc": _advance(state["acc"], state["step"]), "step": state["step"] + 1}
            _save_atomic(path, state)
        return {"acc": state["acc"], "steps": state["step"], "starts": state["starts"]}


def _hold(seconds: float) -> dict[str, Any]:
    """The preemptor: occupies its node for a while; returns where and when it started."""
    start = time.time()
    time.sleep(seconds)
    return {"node": os.environ["SLURMD_NODENAME"], "start": start}


def _saved_step(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _node_of(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True,
                          timeout=20, check=True).stdout.strip()


@pytest.fixture(scope="module")
def requeue_runs(tmp_path_factory: pytest.TempPathFactory, executor_in: Any, slurm_cluster: Any,
                 sacct_states: Any) -> dict[str, dict[str, Any]]:
    """Submits the three jobs, requeues / preempts two of them mid-run, waits (bounded) for all; returns per way
    the result or the error, the expected result, the sacct states; and the preemptor's outcome."""
    root = tmp_path_factory.mktemp("requeue")
    jobs: dict[str, submitit.Job[Any]] = {}
    for way, plan in PLANS.items():
        executor = executor_in(root / f"submitit-{way}", max_num_timeout=plan["max_num_timeout"],
                               cpus_per_task=4, name=f"requeue-{way}", **plan["params"])  # a whole node each
        jobs[way] = executor.submit(StepwiseJob(str(root / f"{way}.json"), plan["n_steps"], plan["step_s"]))

    preemptor: submitit.Job[Any] | None = None
    victim_node = ""
    requeued = False
    deadline = time.monotonic() + DEADLINE_S
    error = ""
    polls = 0
    while True:
        if not requeued and _saved_step(root / "scontrol_requeue.json") >= INTERVENE_AT_STEP:
            subprocess.run(["scontrol", "requeue", jobs["scontrol_requeue"].job_id], check=True, timeout=30)
            requeued = True
        if preemptor is None and _saved_step(root / "preemption.json") >= INTERVENE_AT_STEP:
            victim_node = _node_of(jobs["preemption"].job_id)
            high = executor_in(root / "submitit-high", cpus_per_task=4, name="requeue-preemptor",
                               slurm_partition=slurm_cluster.high_partition, slurm_nodelist=victim_node)
            preemptor = high.submit(_hold, 3.0)
        pending = [j for j in [*jobs.values(), preemptor] if j is not None and not j.done(polls % 5 == 0)]
        if not pending and requeued and preemptor is not None:
            break
        if time.monotonic() > deadline:
            error = f"not done after {DEADLINE_S} s: jobs {[j.job_id for j in pending]} cancelled"
            for job in pending:
                job.cancel(check=False)
            break
        polls += 1
        time.sleep(1.0)

    runs: dict[str, dict[str, Any]] = {}
    for way, job in jobs.items():
        plan = PLANS[way]
        run: dict[str, Any] = {"job_id": job.job_id, "error": error or None, "result": None,
                               "sacct": sacct_states(job.job_id)}
        try:
            run["result"] = job.result()
        except Exception as e:  # reported by the test of this way, with the log
            run["error"] = f"{error}\n{type(e).__name__}: {e}"
        run["expected"] = StepwiseJob(str(root / f"{way}-reference.json"), plan["n_steps"], 0.0)()
        runs[way] = run
    runs["preemptor"] = {"victim_node": victim_node, "job_id": preemptor.job_id if preemptor else None,
                         "result": preemptor.result() if preemptor is not None and not error else None}
    return runs


@pytest.mark.parametrize("way", WAYS)
def test_checkpointable_job_resumes_after_requeue(requeue_runs: dict[str, dict[str, Any]], way: str) -> None:
    run = requeue_runs[way]
    assert run["error"] is None, run["error"]
    result, expected = run["result"], run["expected"]
    assert result["steps"] == expected["steps"] == PLANS[way]["n_steps"]
    assert result["acc"] == expected["acc"], "result differs from the uninterrupted run"
    starts = result["starts"]
    assert len(starts) >= 2, f"the job was never requeued: {starts} (sacct: {run['sacct']})"
    assert starts[0]["from_step"] == 0 and starts[0]["restart_count"] == 0
    assert all(s["restart_count"] >= 1 for s in starts[1:]), f"a start was not a SLURM restart: {starts}"
    assert {s["job_id"] for s in starts} == {run["job_id"]}, "requeued jobs keep their job id"
    assert any(s["from_step"] > 0 for s in starts[1:]), f"restarted from scratch, not from saved state: {starts}"
    # REQUEUED when submitit requeued it (or scontrol did); PREEMPTED should SLURM's own requeue come first.
    assert {"REQUEUED", "PREEMPTED"} & set(run["sacct"]), f"SLURM accounting shows no requeue: {run['sacct']}"


def test_preemptor_ran_on_the_victims_node(requeue_runs: dict[str, dict[str, Any]]) -> None:
    pre = requeue_runs["preemptor"]
    assert pre["job_id"] is not None, "the preempting job was never submitted"
    assert pre["result"]["node"] == pre["victim_node"] != ""
    victim = requeue_runs["preemption"]["result"]
    assert victim is not None and len(victim["starts"]) >= 2, requeue_runs["preemption"]["error"]
    victim_restart = victim["starts"][1]["time"]
    # The victim held the whole node: the preemptor could only start by pushing it off (it came back later).
    assert pre["result"]["start"] < victim_restart
