"""The submitit wrapper: preemption hand-over to submitit (checkpoint + requeue), plain restarts, parents.

These use a small stage that follows the run-folder contract (tests/jobs/fake_stage.py) and submitit's
LocalExecutor, which runs the same checkpoint/requeue protocol as SLURM on this machine. The real stages on
the real cluster are exercised by tests/jobs/cli/test_sweep_cluster.py.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jobs.sweep import launch, local_pipeline
from jobs.config.cluster import load_profile, make_executor
from jobs.sweep.launch import ReportTask, StageTask, check_parent

FAKE = "tests.jobs.fake_stage:run_stage"
ROOT = Path(__file__).resolve().parents[3]


def _config(run_dir: Path, steps: int = 30, parent: str | None = None) -> dict[str, Any]:
    return {"stage": "pretrain", "run_dir": str(run_dir), "seed": 0, "parent": parent,
            "train": {"max_steps": steps, "checkpoint_every": 5}}


def _wait(pred: Any, timeout: float, what: str) -> None:
    t0 = time.time()
    while not pred():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _step(run: Path) -> int:
    try:
        return int(json.loads((run / "progress.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def _reference_weights(tmp_path: Path, steps: int) -> str:
    from tests.jobs.fake_stage import run_stage

    os.environ.setdefault("FAKE_STEP_S", "0.0")
    return str(run_stage(_config(tmp_path / "reference", steps))["weights"])


def test_checkpoint_requeues_the_same_task() -> None:
    task = StageTask({"run_dir": "/x", "stage": "finetune"}, FAKE)
    delayed = task.checkpoint()
    assert isinstance(delayed.function, StageTask) and delayed.function is not task
    assert delayed.function.config == task.config and delayed.function.runner == FAKE
    assert pickle.loads(pickle.dumps(task)).config == task.config  # picklable for submitit
    assert isinstance(ReportTask("/s").checkpoint().function, ReportTask)


def test_a_task_refuses_to_start_from_a_parent_that_is_not_done(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    with pytest.raises(RuntimeError, match="is not done"):
        check_parent({"parent": str(parent), "run_dir": "/x"})
    parent.mkdir()
    (parent / "status.json").write_text(json.dumps({"state": "failed", "reason": "boom"}))
    with pytest.raises(RuntimeError, match="failed"):
        StageTask(_config(tmp_path / "child", parent=str(parent)), FAKE)()
    assert not (tmp_path / "child").exists()  # nothing was started
    (parent / "status.json").write_text(json.dumps({"state": "done"}))
    check_parent({"parent": str(parent)})


@pytest.mark.slow
def test_preempted_task_checkpoints_requeues_and_ends_with_identical_weights(tmp_path: Path) -> None:
    """USR2 -> the loop saves at a step boundary -> submitit's handler runs checkpoint() -> requeue -> resume."""
    steps = 30
    os.environ["FAKE_STEP_S"] = "0.15"
    try:
        run = tmp_path / "run"
        ex = make_executor(load_profile("local_executor"), tmp_path / "submitit" / "%j")
        job = ex.submit(StageTask(_config(run, steps), FAKE))
        _wait(lambda: _step(run) >= 7, 60, "the task to pass step 7")
        pid = int((run / "attempts.log").read_text().split("pid=")[-1].split()[0])
        os.kill(pid, signal.SIGUSR2)
        _wait(lambda: (run / "status.json").exists(), 120, "the requeued task to finish")
        _wait(job.done, 60, "the local job to end")
        status = json.loads((run / "status.json").read_text())
    finally:
        os.environ.pop("FAKE_STEP_S", None)
    attempts = (run / "attempts.log").read_text().splitlines()
    assert len(attempts) == 2, attempts  # started, preempted, requeued once
    resumed_at = int(attempts[1].split("step=")[1].split()[0])
    assert 7 <= resumed_at < steps  # resumed from the checkpoint written on the signal, not from 0
    assert status["state"] == "done" and status["step"] == steps
    assert status["weights"] == _reference_weights(tmp_path, steps)
    log = "".join(p.read_text() for p in (tmp_path / "submitit").rglob("*.err"))
    # submitit's own handler took the signal over (the requeue itself is the second attempt above)
    assert "Caught signal SIGUSR2" in log


@pytest.mark.slow
def test_plain_kill_without_signal_resumes_from_the_last_periodic_checkpoint(tmp_path: Path) -> None:
    """A node failure / SIGTERM preemption: no checkpoint on the way out; the restart uses the periodic one."""
    steps = 24
    run = tmp_path / "run"
    code = (f"import json,sys; from jobs.sweep.launch import StageTask; "
            f"StageTask(json.loads(sys.argv[1]), {FAKE!r})()")
    env = dict(os.environ, FAKE_STEP_S="0.1", PYTHONPATH=str(ROOT))
    cfg = json.dumps(_config(run, steps))
    proc = subprocess.Popen([sys.executable, "-c", code, cfg], env=env, cwd=ROOT)
    try:
        _wait(lambda: _step(run) >= 12, 60, "step 12")
        proc.kill()
    finally:
        proc.wait()
    killed_at = _step(run)
    subprocess.run([sys.executable, "-c", code, cfg], env=dict(env, FAKE_STEP_S="0"), cwd=ROOT, check=True)
    attempts = (run / "attempts.log").read_text().splitlines()
    resumed_at = int(attempts[1].split("step=")[1].split()[0])
    assert resumed_at % 5 == 0 and resumed_at <= killed_at  # the last periodic checkpoint (every 5 steps)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["weights"] == _reference_weights(tmp_path, steps)


def test_non_zero_rank_waits_for_rank_zero_to_requeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's handler returns at once on ranks != 0; the wrapper must not exit them on its own."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: seen.append(s))
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setattr(launch, "_RANK_WAIT_S", 0.3)
    try:
        t0 = time.monotonic()
        launch._hand_over(signal.SIGUSR2, RuntimeError("x"))
        waited = time.monotonic() - t0
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [signal.SIGUSR2] and waited >= 0.3


def test_preempt_signal_follows_submitit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert launch.preempt_signal() == signal.SIGUSR2
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "TERM")
    assert launch.preempt_signal() == signal.SIGTERM
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "NOPE")
    with pytest.raises(ValueError, match="NOPE"):
        launch.preempt_signal()


def test_resolve_runner_names_the_problem() -> None:
    with pytest.raises(ValueError, match="module:function"):
        launch.resolve_runner("jobs.stages.runner")
    with pytest.raises(ValueError, match="no function"):
        launch.resolve_runner("jobs.sweep.launch:nope")


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("setup", [[], ["export MASTER_ADDR=127.0.0.1 MASTER_PORT=1"]], ids=["clean", "inherited"])
def test_multi_node_task_gets_the_distributed_environment(tmp_path: Path, setup: list[str]) -> None:
    """2 nodes x 1 task: each rank sees RANK/WORLD_SIZE/MASTER_ADDR (resolvable) before the stage runs, also
    when the environment already held a MASTER_ADDR (then WORLD_SIZE was never set: two lone rank-0 runs)."""
    import dataclasses

    run = tmp_path / "run"
    profile = dataclasses.replace(load_profile("local"), nodes=2, time_min=5, signal_delay_s=30, setup=setup)
    ex = make_executor(profile, tmp_path / "submitit" / "%j", job_name="multinode-env")
    job = ex.submit(StageTask({"run_dir": str(run), "stage": "pretrain"}, "tests.jobs.fake_stage:record_env"))
    _wait(lambda: len(list(run.glob("rank-*.json"))) == 2 or job.done(), 180, "both ranks")
    _wait(job.done, 60, "the job to end")
    ranks = [json.loads((run / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["RANK"] for r in ranks] == ["0", "1"] and {r["WORLD_SIZE"] for r in ranks} == {"2"}
    assert len({(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in ranks}) == 1
    assert all(r["master_resolves"] for r in ranks) and {r["SLURM_NODEID"] for r in ranks} == {"0", "1"}


def test_a_child_waits_for_its_parent_running_in_another_live_pipeline(tmp_path: Path) -> None:
    """A rerun that added a fine-tune while the first pipeline still pretrained: the second pipeline
    cancelled the new task at once (DependencyNeverSatisfied) instead of waiting for the parent."""
    import threading

    from jobs.sweep.manifest import JobRecord, Manifest, Task, append_jobs, process_start, write_manifest

    pre, ft = tmp_path / "runs" / "pretrain" / "a", tmp_path / "runs" / "finetune" / "a1"
    tasks = [Task(key="pretrain/a", stage="pretrain", point="a", seed=0, hash="0" * 8, run_dir=str(pre), parent=None,
                  axes={}, overrides=[], config=_config(pre, steps=2)),
             Task(key="finetune/a1", stage="finetune", point="a1", seed=0, hash="0" * 8, run_dir=str(ft),
                  parent="pretrain/a", axes={}, overrides=[], config=_config(ft, steps=2, parent=str(pre)))]
    write_manifest(tmp_path, Manifest(name="t", sweep_dir=str(tmp_path), definition={}, cluster={},
                                      stages=["pretrain", "finetune"], tasks=tasks))
    # pipeline 1 (a live process, its state file says it runs pretrain/a)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = local_pipeline.pipeline_state_path(tmp_path, str(other.pid))
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"job_id": str(other.pid), "pid": other.pid, "pid_start": process_start(other.pid),
                                     "tasks": {"pretrain/a": {"state": "RUNNING"}}}))
        append_jobs(tmp_path, [JobRecord(**{"key": "pretrain/a", "job_id": f"{other.pid}:0", "executor": "local",
                                "pipeline": str(other.pid), "stage": "pretrain"})])
        os.environ["FAKE_STEP_S"] = "0.0"
        from tests.jobs.fake_stage import run_stage

        seen: dict[str, bool] = {}

        def pipeline_one_finishes_the_parent() -> None:
            seen["child_started_early"] = (ft / "status.json").exists()
            run_stage(_config(pre, steps=2))

        timer = threading.Timer(1.5, pipeline_one_finishes_the_parent)
        timer.start()
        try:  # the pipeline installs signal handlers: it runs in the main thread
            out = local_pipeline.PipelineTask(str(tmp_path), ["finetune/a1"], report=False, runner=FAKE)()
        finally:
            timer.cancel()
        assert out == {"finetune/a1": "COMPLETED"} and seen == {"child_started_early": False}
        # and when the other pipeline dies with the parent unfinished, the child is given up
        (ft / "status.json").unlink()
        (pre / "status.json").unlink()
        other.kill()
        other.wait()
        assert local_pipeline.PipelineTask(str(tmp_path), ["finetune/a1"], report=False, runner=FAKE)() == {
            "finetune/a1": "CANCELLED"}
    finally:
        other.kill()
        other.wait()
