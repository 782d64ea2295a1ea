"""``simclr-resume SWEEP_DIR``: resubmit exactly the tasks of a sweep that are not done.

Not done = failed, cancelled, timed out too often, lost (no SLURM record), or never submitted; a task whose
run folder says ``done`` is never touched, and a task whose latest job is still queued or running is never
submitted twice. The resubmitted tasks get the same per-task dependencies as in ``sweep``: on their parent
task when it is resubmitted too, on the parent's job when it is still queued or running, none when the
parent is done. A task still queued behind a parent that is resubmitted (its dependency can never be
satisfied) is cancelled and resubmitted with the new one. A new report job follows. Idempotent: a second
``resume`` right after the first finds everything queued and submits nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from jobs.sweep.launch import DEFAULT_RUNNER
from jobs.sweep.manifest import read_manifest
from jobs.sweep.driver import lock_plan_submit
from jobs.sweep.submit import Plan, Submission, current_records, plan


def resume_plan(sweep_dir: str | Path) -> Plan:
    """What ``resume`` would submit now (reads the sweep folder and SLURM; submits nothing)."""
    manifest = read_manifest(sweep_dir)
    _check_in_place(sweep_dir, manifest.sweep_dir)
    records, states = current_records(sweep_dir, require_live=True)
    return plan(manifest, records, states)


def _check_in_place(sweep_dir: str | Path, recorded: str) -> None:
    """A sweep folder moved since its manifest was written names run folders at the old place: resuming would
    find none of them done and train everything again there."""
    here, there = Path(sweep_dir).resolve(), Path(recorded).resolve()
    if here != there:
        raise ValueError(f"{here / 'manifest.json'} was written for the sweep folder {there}: its run folders are "
                         "there. Move the folder back, or run `simclr-sweep <name> sweep_dir=" + str(here)
                         + " ...` (the same definition and overrides), which writes the manifest for this place")


def run_resume(sweep_dir: str | Path, *, dry_run: bool = False, printer: Any = print,
               runner: str = DEFAULT_RUNNER) -> Submission:
    manifest = read_manifest(sweep_dir)
    _check_in_place(sweep_dir, manifest.sweep_dir)
    sub = lock_plan_submit(manifest, tag="resume", describe=lambda p: f"{manifest.name}: {p.summary()}",
                           nothing="nothing to resubmit", list_tasks=True, dry_run=dry_run, printer=printer,
                           runner=runner)
    if not sub.submission_id:
        return sub
    if not dry_run:
        printer(f"[resume] queued {len(sub.job_ids)} task(s): "
                + ", ".join(f"{s}={j}" for s, j in sub.arrays.items())
                + (f", report={sub.report}" if sub.report else ""))
    return sub


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simclr-resume", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--dry-run", action="store_true", help="print what would be submitted")
    args = parser.parse_args(argv)
    try:
        run_resume(args.sweep_dir, dry_run=args.dry_run)
    except ValueError as e:
        print(f"simclr-resume: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
