"""A small stage that follows the run-folder contract (docs/CONTRACTS.md), for tests of the job layer itself.

It "trains" ``train.max_steps`` steps of ``FAKE_STEP_S`` seconds each (env, default 0.05); its "weights"
are a hash chain over the steps, so a run that was preempted and resumed ends with exactly the weights of
one that was not -- and a resume that skipped or repeated a step does not. It checkpoints every
``train.checkpoint_every`` steps (atomic JSON), honours ``simclr.train.preempt`` at step boundaries like
the real loop (checkpoint, then ``PreemptionRequested``), writes ``progress.json``, ``metrics.jsonl`` and
``status.json`` last. A file named ``FAIL`` in the run folder makes it fail (status failed, exception).
The end-to-end tests of issue 6 use the real stages; this stands in only where the job layer is tested.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from simclr.train import preempt


def _write(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def run_stage(config: dict[str, Any]) -> dict[str, Any]:
    run = Path(config["run_dir"])
    run.mkdir(parents=True, exist_ok=True)
    status_path = run / "status.json"
    if status_path.exists():
        st = json.loads(status_path.read_text())
        if st.get("state") == "done":
            return st
    _write(run / "config.json", config)
    total = int(config["train"]["max_steps"]) or 10
    every = max(1, int(config["train"]["checkpoint_every"]))
    step_s = float(os.environ.get("FAKE_STEP_S", "0.05"))
    ckpt = run / "ckpt.json"
    restarts = 0
    if ckpt.exists():
        state = json.loads(ckpt.read_text())
        step, weights = state["step"], state["weights"]
        restarts = int(json.loads((run / "progress.json").read_text()).get("restarts", 0)) + 1
    else:
        step, weights = 0, hashlib.sha256(f"{config['seed']}:{config.get('parent')}".encode()).hexdigest()
    t0 = time.time()
    with open(run / "attempts.log", "a") as f:
        f.write(f"start step={step} job={os.environ.get('SLURM_JOB_ID', '-')} pid={os.getpid()}\n")
    try:
        if (run / "FAIL").exists():
            raise RuntimeError("FAIL marker present")
        while step < total:
            if preempt.requested():
                _write(ckpt, {"step": step, "weights": weights})
                raise preempt.PreemptionRequested(preempt.signum(), step)
            time.sleep(step_s)
            weights = hashlib.sha256(f"{weights}:{step}".encode()).hexdigest()
            step += 1
            with open(run / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "epoch": 0, "stage": config["stage"], "split": "train",
                                    "name": "loss", "value": 1.0 / step, "time": time.time()}) + "\n")
            _write(run / "progress.json", {"step": step, "total_steps": total, "epoch": 0, "restarts": restarts,
                                           "time": time.time()})
            if step % every == 0:
                _write(ckpt, {"step": step, "weights": weights})
    except preempt.PreemptionRequested:
        raise
    except Exception as e:
        _write(status_path, {"state": "failed", "reason": f"{type(e).__name__}: {e}", "step": step,
                             "total_steps": total, "time": time.time()})
        raise
    status = {"state": "done", "reason": None, "step": step, "total_steps": total,
              "wall_time_s": time.time() - t0, "params": 0, "world_size": int(os.environ.get("WORLD_SIZE", "1")),
              "device": "cpu", "final": {"test/top1": 50.0}, "weights": weights, "time": time.time()}
    _write(status_path, status)
    return status


def record_env(config: dict[str, Any]) -> dict[str, Any]:
    """Multi-task jobs: every rank writes what the wrapper exported for torch.distributed, rank 0 the status."""
    import socket

    run = Path(config["run_dir"])
    run.mkdir(parents=True, exist_ok=True)
    keys = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NODEID")
    env = {k: os.environ.get(k) for k in keys}
    try:
        env["master_resolves"] = socket.gethostbyname(env["MASTER_ADDR"] or "")
    except OSError:
        env["master_resolves"] = None
    _write(run / f"rank-{env['RANK']}.json", env)
    status = {"state": "done", "reason": None, "step": 0, "total_steps": 0, "time": time.time()}
    if env["RANK"] == "0":
        _write(run / "status.json", status)
    return status
