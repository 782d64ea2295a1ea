"""Submitting a sweep's tasks: ONE SLURM array per stage, per-task dependencies, the report job last.

Shared by ``sweep`` (first submission, or a rerun of the same sweep) and ``resume``. Both go through
:func:`plan`, which decides from the run folders and SLURM's live view which tasks to submit: a task whose
run folder says ``done`` is never submitted again (a finished run is never overwritten), a task whose
latest job is still queued or running is never duplicated, everything else (failed, cancelled, timed
out too often, lost, never submitted) is.

Per-task dependencies across arrays -- the choice and its trade-off
------------------------------------------------------------------
A finetune task must start when ITS pretrain task is done, not when the whole pretrain array is (one
slow point would hold back every fine-tune), and a failed pretrain must stop only its own dependants.
submitit's ``executor.batch()`` makes one ``sbatch --array`` whose ``#SBATCH`` lines (``--dependency``
included) apply to every task. What Slurm 22.05 offers, measured on the local cluster:

* ``--dependency=afterok:<array>`` (whole array): one sbatch per stage, but coarse (see above).
* ``--dependency=aftercorr:<array>``: task i waits for task i of the other array -- per task, but only
  one-to-one; a pretrain point fans out to several label fractions and head layers, so it does not fit.
* one ``sbatch`` per task with ``afterok:<array>_<i>``: exact, but 100 points = 100+ sbatch calls
  and 100 job ids per stage instead of one array (the benchmark allows one sbatch per stage).
* tasks that wait for their parent themselves: one sbatch, but waiting tasks hold allocations, and
  with bounded parallelism can block the very parents they wait for (deadlock).
* **chosen**: submit the stage array with the coarse ``afterok`` on its parent arrays (and
  ``--kill-on-invalid-dep=yes``), then narrow each task's dependency with ``scontrol update
  JobId=<array>_[i,j,...] Dependency=afterok:<parent_array>_<k>`` -- one line per parent, all lines sent
  to ONE ``scontrol`` process on stdin. Slurm splits the updated tasks out of the array record but keeps
  their array id, so ``sacct``/``squeue``/``scancel <array>``/``afterany:<array>`` still treat them as one
  array. Cost: one extra process per stage and one RPC per parent (milliseconds each); if the submitter
  dies between the two steps, the tasks keep the coarse dependency -- later, never wrong. A per-task
  update naming a job that left slurmctld's memory is silently dropped by Slurm, so dependencies only
  ever name jobs submitted in the same call or still queued/running, and the updates are read back with
  ``squeue``; the task also refuses to start when its parent run is not done (``launch.check_parent``).

The report job waits with ``afterany`` on every array, so it runs even when tasks failed: with
``--kill-on-invalid-dep=yes`` a task whose parent failed ends (CANCELLED) instead of pending forever.

Local executor: no SLURM, no dependencies: the tasks go to one background :class:`~jobs.sweep.local_pipeline.PipelineTask`.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.config.cluster import ClusterProfile, make_executor, profile_from_dict, slurm_parameters, task_command
from jobs.sweep.launch import DEFAULT_RUNNER, ReportTask, StageTask
from jobs.sweep.local_pipeline import PipelineTask, local_states
from jobs.sweep.manifest import (
    LOCAL,
    SLURM,
    JobId,
    JobRecord,
    Manifest,
    Task,
    append_jobs,
    latest_jobs,
    process_start,
    read_jobs,
)
from jobs.sweep.queue import JobState, query
from jobs.sweep.states import State
from jobs.config.sweep import STAGE_ORDER
from simclr.runfolder.read import is_done


# How long the per-task dependency update (and its read-back) may take before the submission goes on without it.
NARROW_TIMEOUT_S = 120.0


@dataclass
class Plan:
    """What a submission will do. ``deps`` maps a task key to the key of the parent it must wait for
    (submitted now) or to the job id of a parent still in the queue; absent = no dependency."""

    submit: list[Task] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    queued: dict[str, str] = field(default_factory=dict)  # key -> job id still queued/running
    cancel: list[str] = field(default_factory=list)  # job ids to cancel first (they can never run right)
    parent_key: dict[str, str] = field(default_factory=dict)  # key -> parent key submitted in this plan
    parent_job: dict[str, str] = field(default_factory=dict)  # key -> job id of a queued parent
    # A new report job is due: tasks are submitted, or the last report job neither completed nor is queued
    # (it failed, was cancelled or never ran): then a report alone is submitted.
    report_due: bool = True
    last_report: str = ""  # the last report job's state, for the messages

    def summary(self) -> str:
        return (f"{len(self.submit)} to submit, {len(self.queued)} already queued/running, "
                f"{len(self.done)} done" + (f", {len(self.cancel)} stale jobs to cancel" if self.cancel else "")
                + (f", the report again (last one {self.last_report or 'never submitted'})"
                   if self.report_due and not self.submit else ""))

    @property
    def empty(self) -> bool:
        """Nothing to submit at all, not even a report."""
        return not self.submit and not self.report_due


def job_states(sweep_dir: str | Path, records: list[JobRecord], *,
               require_live: bool = False) -> dict[str, JobState]:
    """Job id -> state for every record (one sacct + one squeue call for the SLURM ones).

    ``require_live``: raise :class:`~jobs.sweep.queue.QueueUnavailable` when SLURM's queue cannot be read
    (a plan must not take a running task for a dead one).
    """
    slurm = [r for r in records if r.executor == SLURM]
    # Whoever submitted them (a shared sweep folder): their queues are read too.
    users = sorted({r.user for r in slurm if r.user})
    out = query(sorted({r.job_id for r in slurm}), require_live=require_live, users=users)
    out.update(local_states(sweep_dir, records))
    return out


def plan(manifest: Manifest, records: list[JobRecord], states: dict[str, JobState]) -> Plan:
    """Decide what to submit (see the module docstring). Pure: reads run folders, submits nothing."""
    p = Plan()
    latest = latest_jobs(records)
    by_key = manifest.by_key()
    resubmit: set[str] = set()
    for t in manifest.tasks:
        if is_done(t.run_dir):
            p.done.append(t.key)
            continue
        rec = latest.get(t.key)
        st = states.get(rec.job_id) if rec else None
        if st is not None and st.active:
            p.queued[t.key] = rec.job_id  # type: ignore[union-attr]
        else:
            if st is not None and st.state in ("PENDING",):  # pending but dead (never-satisfied dependency)
                p.cancel.append(st.job_id)
            resubmit.add(t.key)
    # A queued task whose parent is submitted again waits on a dead job: cancel it and submit it anew.
    changed = True
    while changed:
        changed = False
        for key, jid in list(p.queued.items()):
            parent = by_key[key].parent
            if parent is not None and parent in resubmit:
                del p.queued[key]
                p.cancel.append(jid)
                resubmit.add(key)
                changed = True
    for t in manifest.tasks:
        if t.key not in resubmit:
            continue
        p.submit.append(t)
        if t.parent is not None and not is_done(by_key[t.parent].run_dir):
            if t.parent in resubmit:
                p.parent_key[t.key] = t.parent
            elif t.parent in p.queued:
                p.parent_job[t.key] = p.queued[t.parent]
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    p.submit.sort(key=lambda t: order[t.stage])
    report_at = [i for i, r in enumerate(records) if r.stage == "report"]
    rst = states.get(records[report_at[-1]].job_id) if report_at else None
    p.last_report = rst.state if rst is not None else ""
    # Tasks recorded after the last report (jobs.jsonl is append-only, so later = newer, no clock needed):
    # a submitter killed between the arrays and the report's sbatch left them without one. A report still
    # active is left alone (a pending one is superseded below when tasks are submitted now).
    rerun = bool(report_at) and any(r.stage != "report" for r in records[report_at[-1] + 1:])
    p.report_due = (bool(p.submit) or rst is None or not (rst.active or rst.state == "COMPLETED")
                    or (rerun and not rst.active))
    if p.submit and rst is not None and rst.state == State.PENDING.value and not records[report_at[-1]].job_id.is_local:
        # The new report supersedes it (a running one is left to finish its files).
        p.cancel.append(rst.job_id)
    return p


@contextlib.contextmanager
def submit_lock(sweep_dir: str | Path) -> Iterator[None]:
    """One submitter per sweep folder at a time (two concurrent reruns must not both submit a task)."""
    path = Path(sweep_dir) / ".submit.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        f = open(path, "a")
    except PermissionError:  # a labmate's lock file: flock needs no write access
        f = open(path)
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ranges(indices: list[int]) -> str:
    """[0,1,2,5] -> '0-2,5' (SLURM's array index syntax)."""
    out: list[str] = []
    idx = sorted(indices)
    start = prev = idx[0]
    for i in [*idx[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
        if i is not None:
            start = prev = i
    return ",".join(out)


class StageProfiles:
    """The cluster profile of each job of a sweep, merged and validated ONCE: the sweep's profile (the manifest's
    ``cluster``) with the stage's ``resources`` on top (``stage_resources[stage]``; the report job's:
    ``report.resources``), or the sweep's profile itself for a stage without any. Merged on first use, then kept.

    :func:`jobs.cli.sweep.build_manifest` makes one from the very records it writes into the manifest and merges
    every stage at once (a bad resource fails before anything is written or queued), with the sweep's profile as
    composed (validated then); :func:`submit` uses that one. For a manifest read back (``resume``) :func:`submit`
    makes one from what the manifest records, merging only the stages it submits.
    """

    def __init__(self, manifest: Manifest, base: ClusterProfile | None = None, *,
                 error: type[ValueError] = ValueError) -> None:
        self._manifest = manifest
        self._base = base
        self._error = error
        self._merged: dict[str, ClusterProfile] = {}

    @property
    def base(self) -> ClusterProfile:
        """The sweep's profile (the local executor's pipeline runs under it)."""
        if self._base is None:
            self._base = profile_from_dict(self._manifest.cluster)
        return self._base

    def __getitem__(self, stage: str) -> ClusterProfile:
        """The profile of ``stage``'s array (``"report"``: of the report job)."""
        return self._merged[stage] if stage in self._merged else self._merge(stage)

    def ranks(self, stage: str) -> int:
        """DDP processes of one task of ``stage``: nodes x tasks per node of its profile (SLURM_NTASKS, the
        world size jobs/sweep/launch.py exports); 1 under the local executor, whose pipeline runs every task as
        one process under the sweep's profile."""
        if self.base.executor == "local":
            return 1
        profile = self[stage]
        return profile.nodes * profile.tasks_per_node

    def merge(self, stages: list[str]) -> StageProfiles:
        """Merge (and validate) these stages' profiles now; returns ``self``."""
        for stage in stages:
            if stage not in self._merged:
                self._merge(stage)
        return self

    def _merge(self, stage: str) -> ClusterProfile:
        m = self._manifest
        res = m.report.get("resources", {}) if stage == "report" else m.stage_resources.get(stage, {})
        if not res:
            self._merged[stage] = self.base
            return self.base
        try:
            self._merged[stage] = profile_from_dict({**m.cluster, **res})
        except ValueError as e:
            where = "report.resources" if stage == "report" else f"stages.{stage}.resources"
            raise self._error(f"sweep definition '{where}': {e}") from None
        return self._merged[stage]


@dataclass
class Submission:
    """What one submission queued: job ids per task key, array ids per stage, the report job id."""

    submission_id: str
    job_ids: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, str] = field(default_factory=dict)
    report: str | None = None
    sbatch_calls: int = 0
    warnings: list[str] = field(default_factory=list)


def _dependency_targets(p: Plan, tasks: list[Task], job_ids: dict[str, str]) -> dict[str, str]:
    """Task key -> job id it must wait for (afterok)."""
    out: dict[str, str] = {}
    for t in tasks:
        if t.key in p.parent_key:
            out[t.key] = job_ids[p.parent_key[t.key]]
        elif t.key in p.parent_job:
            out[t.key] = p.parent_job[t.key]
    return out


def submit(manifest: Manifest, p: Plan, *, report: bool = True, dry_run: bool = False,
           printer: Any = print, runner: str = DEFAULT_RUNNER, profiles: StageProfiles | None = None) -> Submission:
    """Queue ``p.submit`` (one array per stage) and the report job; append every job id to jobs.jsonl.

    ``dry_run``: print the sbatch scripts and dependency updates instead (nothing is submitted or written).
    ``profiles``: the jobs' cluster profiles as merged where the manifest was built; None: from the manifest.
    """
    profiles = profiles if profiles is not None else StageProfiles(manifest)
    sweep_dir = Path(manifest.sweep_dir)
    sub = Submission(submission_id=time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}")
    stale = sorted({j for j in p.cancel if not JobId(j).is_local})
    if stale and not dry_run:
        subprocess.run(["scancel", *stale], capture_output=True, text=True, timeout=60)
    if manifest.cluster.get("executor") == "local":
        return _submit_local(manifest, p, sub, profiles, report=report, dry_run=dry_run, printer=printer,
                             runner=runner)
    folder = sweep_dir / "slurm" / sub.submission_id / "%j"
    stages = [s for s in STAGE_ORDER if any(t.stage == s for t in p.submit)]
    for stage in stages:
        tasks = [t for t in p.submit if t.stage == stage]
        profile = profiles[stage]
        targets = _dependency_targets(p, tasks, sub.job_ids)
        # The whole-array dependency first: the parent arrays (or queued parent tasks) of these tasks.
        coarse = sorted({targets[t.key].rsplit("_", 1)[0] if t.key in p.parent_key else targets[t.key]
                         for t in tasks if t.key in targets})
        dependency = "afterok:" + ":".join(coarse) if coarse else None
        name = f"simclr-{manifest.name}-{stage}"
        if dry_run:
            _print_dry(printer, profile, folder, name, stage, tasks, dependency, targets)
            array_id = f"${stage.upper()}_ARRAY"  # placeholder ids for the dependants' dry-run lines
            sub.arrays[stage] = array_id
            sub.job_ids.update({t.key: f"{array_id}_{i}" for i, t in enumerate(tasks)})
            continue
        ex = make_executor(profile, folder, job_name=name, dependency=dependency, extra={"requeue": True})
        with ex.batch():
            jobs = [ex.submit(StageTask(t.config, runner)) for t in tasks]
        sub.sbatch_calls += 1
        array_id = str(jobs[0].job_id).split("_", 1)[0]
        sub.arrays[stage] = array_id
        for t, j in zip(tasks, jobs):
            sub.job_ids[t.key] = str(j.job_id)
        # Recorded at once: whatever happens next (a slow scontrol, Ctrl-C), a queued array that is not in
        # jobs.jsonl would be submitted a second time by the next sweep or resume.
        # The submitting user too: on a sweep folder shared by a team, status/resume read that user's queue.
        user = getpass.getuser()
        append_jobs(sweep_dir, [
            JobRecord(time=time.time(), submission=sub.submission_id, executor=SLURM, user=user, stage=stage,
                      key=t.key, run_dir=t.run_dir, job_id=JobId(sub.job_ids[t.key]), array_job_id=array_id,
                      array_index=i, dependency=f"afterok:{targets[t.key]}" if t.key in targets else None,
                      log_dir=str(folder).replace("%j", sub.job_ids[t.key]))
            for i, t in enumerate(tasks)
        ])
        _narrow_dependencies(array_id, tasks, targets, dependency, sub)
    if report and manifest.report.get("enabled", True) and (p.report_due or dry_run):
        after = sorted(set(sub.arrays.values()) | set(p.queued.values()))
        dependency = "afterany:" + ":".join(after) if after else None
        profile = profiles["report"]
        name = f"simclr-{manifest.name}-report"
        if dry_run:
            _print_dry(printer, profile, folder, name, "report", [], dependency, {})
        else:
            ex = make_executor(profile, folder, job_name=name, dependency=dependency)
            job = ex.submit(ReportTask(str(sweep_dir)))
            sub.sbatch_calls += 1
            sub.report = str(job.job_id)
            append_jobs(sweep_dir, [JobRecord(time=time.time(), submission=sub.submission_id, executor=SLURM,
                                              user=getpass.getuser(), stage="report", key=None,
                                              job_id=JobId(sub.report), dependency=dependency,
                                              log_dir=str(folder).replace("%j", sub.report))])
    return sub


def _narrow_dependencies(array_id: str, tasks: list[Task], targets: dict[str, str], coarse: str | None,
                         sub: Submission) -> None:
    """Per-task ``afterok`` through one ``scontrol`` process (see the module docstring), then read back."""
    if coarse is None:
        return
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        want = f"afterok:{targets[t.key]}" if t.key in targets else ""
        if want == coarse:
            continue
        groups.setdefault(want, []).append(i)
    if not groups:
        return
    lines = [f"update jobid={array_id}_[{_ranges(idx)}] dependency={dep}" for dep, idx in groups.items()]
    # A failure here only leaves the coarse whole-array dependency (later, never wrong; the task itself
    # also checks its parent): a warning, not an error that would abandon the rest of the submission.
    try:
        r = subprocess.run(["scontrol"], input="\n".join(lines) + "\nquit\n", capture_output=True, text=True,
                           timeout=NARROW_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        sub.warnings.append(f"scontrol dependency updates for array {array_id} failed ({e}): its tasks keep "
                            f"the whole-array dependency {coarse}")
        return
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if r.returncode != 0 or errors:
        sub.warnings.append(f"scontrol dependency updates for array {array_id}: rc={r.returncode} {errors}")
    # Read back: SLURM drops a dependency on a job it forgot without a word.
    try:
        q = subprocess.run(["squeue", "-h", "-r", "-j", array_id, "-o", "%i|%E"], capture_output=True,
                           text=True, timeout=NARROW_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        sub.warnings.append(f"could not read back the dependencies of array {array_id} ({e})")
        return
    seen = dict(line.split("|", 1) for line in q.stdout.splitlines() if "|" in line)
    for i, t in enumerate(tasks):
        if t.key not in targets:
            continue
        jid, parent_job = f"{array_id}_{i}", targets[t.key]
        dep = seen.get(jid)
        if dep is not None and parent_job not in dep and not is_done(_parent_dir(t)):
            sub.warnings.append(f"task {jid} ({t.key}): dependency reads {dep!r}, expected afterok:{parent_job}")


def _parent_dir(t: Task) -> str:
    return str(t.config.get("parent") or "")


def _print_dry(printer: Any, profile: ClusterProfile, folder: Path, name: str, stage: str, tasks: list[Task],
               dependency: str | None, targets: dict[str, str]) -> None:
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(profile, job_name=name, dependency=dependency,
                              extra={"requeue": True} if tasks else None)
    command = task_command(profile.python if profile.python else shlex.quote(sys.executable), folder)
    kw: dict[str, Any] = dict(params)
    if tasks:
        kw["map_count"] = len(tasks)
    text = _make_sbatch_string(command=command, folder=folder, **kw)
    printer(f"# ===== {stage}: {len(tasks) or 1} task(s), job name {name} =====")
    printer(text)
    if tasks:
        for i, t in enumerate(tasks):
            dep = f" afterok:{targets[t.key]}" if t.key in targets else ""
            printer(f"#   [{i}] {t.key}{dep}")
    if targets:
        printer("# then, per task: scontrol update jobid=<array>_[i,...] dependency=afterok:<parent task job id>")


def _submit_local(manifest: Manifest, p: Plan, sub: Submission, profiles: StageProfiles, *, report: bool,
                  dry_run: bool, printer: Any, runner: str) -> Submission:
    """The local executor: one background pipeline process for all tasks (and the report)."""
    sweep_dir = Path(manifest.sweep_dir)
    if not p.submit and not report:
        return sub
    profile = profiles.base
    with_report = report and bool(manifest.report.get("enabled", True)) and p.report_due
    if dry_run:
        printer(f"# local executor: one pipeline process, {len(p.submit)} task(s), "
                f"{profile.array_parallelism} at once, report={with_report}")
        for t in p.submit:
            printer(f"#   {t.key}" + (f" after {t.parent}" if t.parent else ""))
        return sub
    if not p.submit and not with_report:
        return sub
    folder = sweep_dir / "local" / "submitit" / "%j"
    ex = make_executor(profile, folder)
    task = PipelineTask(str(sweep_dir), [t.key for t in p.submit], profile.array_parallelism, with_report, runner)
    # nohup semantics: the pipeline must outlive the shell that started it (an ignored SIGHUP is inherited).
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        job = ex.submit(task)
    finally:
        signal.signal(signal.SIGHUP, old)
    jid = str(job.job_id)
    sub.sbatch_calls += 1
    sub.arrays["pipeline"] = jid
    # The controller's start time with its pid: status/resume/cancel then tell it from a process that got
    # the pid after the pipeline died without cleanup. None off Linux (the pid alone, as before).
    started = process_start(int(jid)) if jid.isdigit() else None
    records = [JobRecord(time=time.time(), submission=sub.submission_id, executor=LOCAL, stage=t.stage, key=t.key,
                         run_dir=t.run_dir, job_id=JobId.local(jid, i), pipeline=jid, pipeline_start=started,
                         log_dir=str(folder).replace("%j", jid))
               for i, t in enumerate(p.submit)]
    for r in records:
        sub.job_ids[str(r.key)] = r.job_id
    if with_report:
        sub.report = JobId.local(jid, "report")
        records.append(JobRecord(time=time.time(), submission=sub.submission_id, executor=LOCAL, stage="report",
                                 key=None, job_id=sub.report, pipeline=jid, pipeline_start=started,
                                 log_dir=str(folder).replace("%j", jid)))
    append_jobs(sweep_dir, records)
    return sub


def current_records(sweep_dir: str | Path, *,
                    require_live: bool = False) -> tuple[list[JobRecord], dict[str, JobState]]:
    """The sweep's job records and their states (``require_live``: see :func:`job_states`)."""
    records = read_jobs(sweep_dir)
    return records, job_states(sweep_dir, records, require_live=require_live)
