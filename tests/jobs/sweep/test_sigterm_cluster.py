"""Issue 23 (case 2) on the real cluster: a SIGTERM means the same at every moment of a task's life.

SLURM sends TERM on preemption without ``preempt_send_user_signal`` and at the time limit. Before the fix a
TERM in the task's first moments (interpreter and submitit start-up, unpickling the job) killed the task
(FAILED, no requeue) and a later one was ignored by submitit ("Bypassing signal SIGTERM"). Now, for each of
a TERM ~0.2 s after the task process started and one at a late training step:

* profile ``sigterm: requeue`` (the default): the task requeues through the USR2 path (submitit's handler,
  after the loop saved at a step boundary) and ends with the weights of an uninterrupted run;
* profile ``sigterm: stop``: the task ends FAILED, not requeued, with the reason in its result, and a late
  stop leaves a checkpoint of the step it stopped at.

The TERM goes to the job step (``scancel --signal=TERM JOBID``: the task processes, as submitit's own
requeue tests do). The four jobs run at once; about 40 s in all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import submitit

from jobs.config.cluster import load_profile, make_executor
from jobs.sweep.launch import StageTask

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FAKE = "tests.jobs.fake_stage:run_stage"
STEPS = 30
STEP_S = "0.15"
EARLY_S = 0.2  # after the task's Python process appeared
LATE_STEP = 12  # past the periodic checkpoint at 10: a resume from >= 12 proves the save at the signal
CASES = [("requeue", "early"), ("requeue", "late"), ("stop", "early"), ("stop", "late")]
DEADLINE_S = 240


def _config(run_dir: Path) -> dict[str, Any]:
    return {"stage": "pretrain", "run_dir": str(run_dir), "seed": 0, "parent": None,
            "train": {"max_steps": STEPS, "checkpoint_every": 5}}


def _task_pids(folder: Path) -> list[int]:
    """Pids of processes whose command line names the job's submitit folder (the emulated nodes are this host)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # the interpreter itself (argv[0]), not srun, whose arguments name the folder too
        if argv[0].rsplit(b"/", 1)[-1].startswith(b"python") and any(str(folder).encode() in a for a in argv[1:]):
            pids.append(int(d.name))
    return pids


def _step(run: Path) -> int:
    try:
        return int(json.loads((run / "progress.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _sacct(job_id: str) -> list[str]:
    out = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                         text=True, timeout=30).stdout
    return [s.split()[0] for s in out.splitlines() if s.strip()]


def _logs(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*_log.*")))


@pytest.fixture(scope="module")
def term_runs(tmp_path_factory: pytest.TempPathFactory, slurm_cluster: Any) -> dict[tuple[str, str], dict[str, Any]]:
    root = tmp_path_factory.mktemp("sigterm")
    os.environ["FAKE_STEP_S"] = STEP_S  # sbatch exports the submitting environment to the task
    jobs: dict[tuple[str, str], tuple[submitit.Job[Any], Path, Path]] = {}
    try:
        for action, when in CASES:
            name = f"{action}-{when}"
            # time_min 20: submitit calls a signal before 80% of the limit (and of limit - 10 min) a preemption,
            # not a time-out, so the requeue does not use up max_num_timeout (FACTS.md).
            profile = dataclasses.replace(load_profile("local"), time_min=20, signal_delay_s=30, setup=[],
                                          sigterm=action)
            folder = root / f"submitit-{name}"
            ex = make_executor(profile, folder / "%j", job_name=f"sigterm-{name}", extra={"requeue": True})
            jobs[(action, when)] = (ex.submit(StageTask(_config(root / name), FAKE)), root / name, folder)
    finally:
        os.environ.pop("FAKE_STEP_S", None)
    sent: dict[tuple[str, str], float] = {}
    seen: dict[tuple[str, str], float] = {}
    deadline = time.monotonic() + DEADLINE_S
    while len(sent) < len(jobs) and time.monotonic() < deadline:
        for case, (job, run, folder) in jobs.items():
            if case in sent:
                continue
            if case[1] == "early":
                if case not in seen and _task_pids(folder):
                    seen[case] = time.monotonic()
                ready = case in seen and time.monotonic() - seen[case] >= EARLY_S
            else:
                ready = _step(run) >= LATE_STEP
            if ready:
                subprocess.run(["scancel", "--signal=TERM", job.job_id], check=True, timeout=30)
                sent[case] = (time.monotonic() - seen[case]) if case in seen else float(_step(run))
        time.sleep(0.005)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for case, (job, run, folder) in jobs.items():
        while not job.done(force_check=True) and time.monotonic() < deadline:
            time.sleep(1.0)
        if not job.done(force_check=True):
            job.cancel(check=False)
        time.sleep(1.0)  # slurmdbd records the end a moment after squeue
        try:
            result: Any = job.result()
        except Exception as e:  # the stop cases end this way; the others report it in their assertion
            result = e
        status = json.loads((run / "status.json").read_text()) if (run / "status.json").exists() else None
        attempts = (run / "attempts.log").read_text().splitlines() if (run / "attempts.log").exists() else []
        out[case] = {"job_id": job.job_id, "sent": sent.get(case), "result": result, "status": status,
                     "attempts": attempts, "sacct": _sacct(job.job_id), "log": _logs(folder), "run": run}
    return out


def _reference(tmp_path: Path) -> str:
    from tests.jobs.fake_stage import run_stage

    os.environ["FAKE_STEP_S"] = "0"
    try:
        return str(run_stage(_config(tmp_path / "reference"))["weights"])
    finally:
        os.environ.pop("FAKE_STEP_S", None)


@pytest.mark.parametrize("when", ["early", "late"])
def test_sigterm_requeues_the_task_at_any_moment(term_runs: dict[tuple[str, str], dict[str, Any]], when: str,
                                                 tmp_path: Path) -> None:
    r = term_runs[("requeue", when)]
    why = f"TERM sent at {r['sent']}; sacct {r['sacct']}; attempts {r['attempts']}\n{r['log'][-3000:]}"
    assert r["sent"] is not None, "the TERM was never sent"
    assert "REQUEUED" in r["sacct"], f"not requeued: {why}"
    assert r["status"] is not None and r["status"]["state"] == "done", why
    assert r["status"]["weights"] == _reference(tmp_path), "result differs from the uninterrupted run"
    # the one path: submitit's preemption handler (checkpoint_and_try_requeue) requeued it, as for USR2
    assert "Requeued job" in r["log"] and "Bypassing signal SIGTERM" not in r["log"], why
    if when == "late":
        assert len(r["attempts"]) == 2, why
        resumed_at = int(r["attempts"][1].split("step=")[1].split()[0])
        assert resumed_at >= LATE_STEP, f"resumed from {resumed_at}, not from the checkpoint at the signal: {why}"


@pytest.mark.parametrize("when", ["early", "late"])
def test_sigterm_with_profile_stop_ends_as_a_recorded_failure(term_runs: dict[tuple[str, str], dict[str, Any]],
                                                              when: str) -> None:
    r = term_runs[("stop", when)]
    why = f"TERM sent at {r['sent']}; sacct {r['sacct']}; attempts {r['attempts']}\n{r['log'][-3000:]}"
    assert r["sent"] is not None, "the TERM was never sent"
    assert r["sacct"] == ["FAILED"], f"expected one attempt ending FAILED: {why}"
    assert isinstance(r["result"], Exception) and "stopped by SIGTERM" in str(r["result"]), why
    assert r["status"] is None or r["status"]["state"] != "done", why
    if when == "late":
        ckpt = json.loads((r["run"] / "ckpt.json").read_text())
        assert ckpt["step"] >= LATE_STEP, f"no checkpoint at the stop: {ckpt} {why}"
