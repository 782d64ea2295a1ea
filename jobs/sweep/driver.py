"""The one way a sweep's tasks are queued: lock the sweep folder, read what is queued and done, plan, submit.

``simclr-sweep`` (a first submission, or a rerun of the same definition) and ``simclr-resume`` both come here,
so that two shells submitting the same sweep at once, or a resume racing a sweep, never queue a task twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobs.sweep.launch import DEFAULT_RUNNER
from jobs.sweep.manifest import Manifest
from jobs.sweep.submit import Plan, StageProfiles, Submission, current_records, plan, submit, submit_lock


def lock_plan_submit(manifest: Manifest, *, tag: str, describe: Callable[[Plan], str], nothing: str,
                     prepare: Callable[[], None] | None = None, list_tasks: bool = False, dry_run: bool = False,
                     printer: Any = print, runner: str, profiles: StageProfiles | None = None) -> Submission:
    """Under the sweep folder's lock: ``prepare()`` (e.g. write the manifest), read the job records and the
    live queue (a queue that cannot be read stops here: nothing is planned on a guess), plan, check the data the
    tasks to submit will read and its size against their batches and ranks (:mod:`jobs.sweep.preflight`; a
    DataError stops here), and submit the plan
    (``dry_run``: print it only). Prints ``[tag] <describe(plan)>``, then ``[tag] <nothing>`` when there is
    nothing to submit, and each warning of the submission. ``profiles``: the stages' cluster profiles as the
    manifest was built with them (merged once); without, they are merged from the manifest's records."""
    with submit_lock(manifest.sweep_dir):
        if prepare is not None:
            prepare()
        records, states = current_records(manifest.sweep_dir, require_live=True)
        p = plan(manifest, records, states)
        printer(f"[{tag}] {describe(p)}")
        if p.empty:
            printer(f"[{tag}] {nothing}")
            return Submission(submission_id="")
        if list_tasks:
            for t in p.submit:
                printer(f"[{tag}]   {t.key}")
        # Merged here when the caller has none (resume), so the size check and submit use the same profiles.
        profiles = profiles if profiles is not None else StageProfiles(manifest)
        if not dry_run and runner == DEFAULT_RUNNER:  # the stages read data; a test's runner may not
            from jobs.sweep.preflight import check_data  # numpy: paid only when something is submitted

            # A task's global batch is shared by its ranks: the check needs each submitted stage's count.
            check_data((t.config for t in p.submit), ranks={s: profiles.ranks(s) for s in {t.stage for t in p.submit}})
        sub = submit(manifest, p, dry_run=dry_run, printer=printer, runner=runner, profiles=profiles)
    for w in sub.warnings:
        printer(f"[{tag}] WARNING: {w}")
    return sub
