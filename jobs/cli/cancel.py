"""``simclr-cancel SWEEP_DIR``: cancel every job of a sweep that is still queued or running.

SLURM jobs: ONE ``scancel`` with the array/job ids from ``jobs.jsonl`` (a whole array by its id).
Local-executor pipelines: SIGINT to the pipeline's controller, as submitit's ``LocalJob.cancel`` does; the
pipeline stops its running children. Run folders are left as they are: ``resume`` continues from them.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from jobs.sweep.local_pipeline import read_state
from jobs.sweep.manifest import LOCAL, pid_alive, recorded_start
from jobs.sweep.queue import QUERY_FAILED
from jobs.sweep.submit import current_records


def cancel(sweep_dir: str | Path) -> list[str]:
    """Cancel what is still active; returns the ids it cancelled (array ids for whole arrays)."""
    if not (Path(sweep_dir) / "jobs.jsonl").is_file():
        raise ValueError(f"{sweep_dir}: no jobs.jsonl; is it a sweep folder with submitted jobs?")
    records, states = current_records(sweep_dir)
    slurm_ids: list[str] = []
    pipelines: dict[str, int | None] = {}  # pipeline job id -> its controller's recorded start time
    for r in records:
        jid = r.job_id
        st = states.get(jid)
        # QUERY_FAILED: squeue did not answer; cancel it anyway (scancel of an ended job is harmless).
        if st is None or not (st.active or st.state in ("PENDING", QUERY_FAILED)):
            continue
        if r.executor == LOCAL and r.pipeline is not None:
            pipelines.setdefault(r.pipeline, r.pipeline_start)
        else:
            slurm_ids.append(jid)
    # Whole arrays by their id when every active task of the array is being cancelled anyway.
    ids = sorted({j.split("_", 1)[0] for j in slurm_ids})
    if ids:
        p = subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            # scancel cancels what it may and names the rest ("Kill job error on job id 123: Access/permission
            # denied": a labmate's jobs in a shared sweep folder). Those are not reported as cancelled.
            refused = {m.split("_", 1)[0] for m in re.findall(r"job id (\d[\d_]*)", p.stderr)}
            print(f"[cancel] scancel refused {', '.join(sorted(refused)) or 'some jobs'}: "
                  f"{p.stderr.strip()[:500]}", file=sys.stderr)
            ids = [i for i in ids if i not in refused] if refused else []
    for job, job_start in pipelines.items():
        # SIGINT to the pipeline process itself (its pid is in its state file): it stops its children and
        # ends without a requeue. The controller's pid would be a shell when the profile has setup lines.
        state = read_state(sweep_dir, job)
        for pid, start in ((state.get("pid"), recorded_start(state.get("pid_start"))), (job, job_start)):
            if pid is None:  # no state file yet: the job id (a local-executor pid) is all there is
                continue
            try:
                n = int(pid)
                # Never kill(0) / kill(-1) (the caller's process group / everything), and never a process
                # that got the pid after the pipeline died (pid_alive compares the recorded start time).
                if not pid_alive(n, start):
                    continue
                os.kill(n, signal.SIGINT)
                break
            except (ProcessLookupError, PermissionError, ValueError, TypeError):
                continue  # gone, or another user's process (so not our pipeline)
    return ids + [f"local:{p}" for p in pipelines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simclr-cancel", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir")
    args = parser.parse_args(argv)
    try:
        done = cancel(args.sweep_dir)
    except ValueError as e:
        print(f"simclr-cancel: error: {e}", file=sys.stderr)
        return 2
    print(f"[cancel] cancelled: {' '.join(done) if done else 'nothing was queued or running'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
