"""Submitting a 3-stage sweep of 100 config points per stage to the local SLURM cluster, and `status` on it.

Goal (issue 6): at most ONE sbatch per stage, submission under 10 s on this machine, `status` under 3 s.
Baseline, measured side by side in the same run: the same 300 tasks submitted one sbatch per task with
per-task ``afterok`` (what per-task dependencies cost without the array + ``scontrol update`` scheme).

Every job is submitted with ``--begin=now+1hour`` (so nothing runs; the stage is the test stand-in anyway)
and cancelled at the end. ``sbatch`` calls are counted through a PATH shim that logs, then runs the real one.

    source <(slurm/cluster.sh env) && python -m benchmarks.sweep_submit
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._result import write_result

if TYPE_CHECKING:
    from jobs.sweep.manifest import Manifest

N = 100  # config points per stage
FAKE = "tests.jobs.fake_stage:run_stage"


def _definition(sweep_dir: Path) -> dict[str, Any]:
    # 100 pretrain points (5 widths x 2 head depths x 10 seeds), one fine-tune each, one distill each.
    return {
        "name": "bench100",
        "sweep_dir": str(sweep_dir),
        "cluster": {"partition": "debug", "time_min": 10, "signal_delay_s": 30, "sbatch": {"begin": "now+1hour"}},
        "overrides": ["data.root=/nonexistent", "train.max_steps=1"],
        "stages": {
            "pretrain": {"grid": [{"axes": {"model.width": [0.25, 0.5, 0.75, 1.0, 1.5],
                                            "model.num_proj_layers": [2, 3]}, "seeds": list(range(10))}]},
            "finetune": {"grid": [{"axes": {"finetune.label_fraction": [0.01]}}]},
            "distill": {"grid": [{"axes": {"model": ["resnet18_w025"]}}]},
        },
    }


def _shim(folder: Path) -> Path:
    """An `sbatch` earlier on PATH that appends a line per call to folder/sbatch.log, then runs the real one."""
    real = shutil.which("sbatch")
    if real is None:
        raise SystemExit("sbatch not found: start the local cluster (make cluster-up; source <(slurm/cluster.sh env))")
    log = folder / "sbatch.log"
    shim = folder / "bin" / "sbatch"
    shim.parent.mkdir(parents=True)
    shim.write_text(f"#!/bin/sh\necho call >> {log}\nexec {real} \"$@\"\n")
    shim.chmod(0o755)
    return log


def _calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _baseline(manifest: Manifest, folder: Path) -> tuple[float, int, list[str]]:
    """One sbatch per task, each with its own afterok: the straightforward per-task-dependency submission."""
    from jobs.config.cluster import make_executor, profile_from_dict
    from jobs.sweep.launch import StageTask

    profile = profile_from_dict(manifest.cluster)
    ids: dict[str, str] = {}
    t0 = time.perf_counter()
    for t in manifest.tasks:
        dep = f"afterok:{ids[t.parent]}" if t.parent else None
        ex = make_executor(profile, folder / "%j", job_name=f"baseline-{t.stage}", dependency=dep,
                           extra={"requeue": True})
        ids[t.key] = str(ex.submit(StageTask(t.config, FAKE)).job_id)
    return time.perf_counter() - t0, len(ids), list(ids.values())


def main() -> int:
    from jobs.sweep.expand import sweep_from_dict
    from jobs.sweep.manifest import read_jobs, read_manifest
    from jobs.sweep.status import collect, render
    from jobs.cli.sweep import build_manifest, submit_sweep

    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    log = _shim(work)
    os.environ["PATH"] = f"{work / 'bin'}:{os.environ['PATH']}"
    cancel: list[str] = []
    try:
        sweep_dir = work / "sweep"
        # expansion alone (compose + validate 300 configs), for the split in the record
        t0 = time.perf_counter()
        build_manifest(sweep_from_dict(_definition(work / "dry")))
        expand_s = time.perf_counter() - t0
        # --- ours: compose + expand + validate 300 points, manifest, 3 arrays + per-task deps + report ------
        t0 = time.perf_counter()
        sub = submit_sweep(sweep_from_dict(_definition(sweep_dir)), runner=FAKE, printer=lambda *_: None)
        submit_s = time.perf_counter() - t0
        sbatch_ours = _calls(log)
        cancel += list(sub.arrays.values()) + ([sub.report] if sub.report else [])
        manifest = read_manifest(sweep_dir)
        n_tasks = len(manifest.tasks)
        stages = len(manifest.stages)
        # the per-task dependencies really are in SLURM: a sample read back with squeue
        q = subprocess.run(["squeue", "-h", "-r", "-j", sub.arrays["finetune"], "-o", "%i|%E"], capture_output=True,
                           text=True).stdout
        deps = dict(line.split("|", 1) for line in q.splitlines())
        pre = sub.arrays["pretrain"]
        per_task_ok = all(f"afterok:{pre}_" in d for d in deps.values()) and len(deps) == N
        # --- status on it --------------------------------------------------------------------------------
        t0 = time.perf_counter()
        rows, report = collect(sweep_dir)
        render(rows, report, sweep_dir)
        status_s = time.perf_counter() - t0
        # --- baseline: one sbatch per task -----------------------------------------------------------------
        before = _calls(log)
        base_s, base_jobs, base_ids = _baseline(manifest, work / "baseline")
        sbatch_base = _calls(log) - before
        cancel += base_ids
    finally:
        if cancel:
            subprocess.run(["scancel", *sorted({c.split("_", 1)[0] for c in cancel})], capture_output=True)
        records = read_jobs(work / "sweep") if (work / "sweep").exists() else []
        shutil.rmtree(work, ignore_errors=True)
    print(f"ours:     {n_tasks} tasks in {stages} stages: {sbatch_ours} sbatch calls, {submit_s:.2f} s "
          f"({expand_s:.2f} s of it composing+validating; per-task afterok in SLURM: {per_task_ok})")
    print(f"status:   {status_s:.2f} s for {len(rows)} rows (one sacct + one squeue)")
    print(f"baseline: one sbatch per task: {sbatch_base} sbatch calls, {base_s:.2f} s")
    path = write_result(
        "sweep_submit", round(submit_s, 3), "s", "one sbatch per task with per-task afterok",
        round(base_s, 3), "<= 1 sbatch per stage and < 10 s for a 3-stage sweep of 100 points; status < 3 s",
        sbatch_calls=sbatch_ours, sbatch_calls_baseline=sbatch_base, stages=stages, tasks=n_tasks,
        expand_s=round(expand_s, 3), status_s=round(status_s, 3), per_task_dependencies_verified=per_task_ok, jobs_recorded=len(records),
        cluster="local Slurm 22.05, 3 emulated nodes on 2 cores",
    )
    print(f"-> {path}")
    ok = sbatch_ours <= stages + 1 and submit_s < 10 and status_s < 3 and per_task_ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
