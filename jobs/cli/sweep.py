"""``simclr-sweep NAME [overrides...]``: expand a sweep definition, write its manifest, queue it, return.

::

    simclr-sweep demo                                    # jobs/conf/sweep/demo.yaml, cluster profile `local`
    simclr-sweep demo sweep_dir=/scratch/me/abl cluster=example_gpu cluster.partition=a100
    simclr-sweep demo data=imagefolder data.root=/data/imagenet train.epochs=100   # every stage's config
    simclr-sweep demo 'stages.finetune.grid=[{axes:{finetune.label_fraction:[0.01]},seeds:[0,1,2]}]'
    simclr-sweep demo "stages.pretrain.overrides=['train.epochs=50']" stages.distill.enabled=false
    simclr-sweep tiny --dry-run                          # print the sbatch scripts, submit nothing

The definition is composed with Hydra's compose API (not ``@hydra.main``: no working-directory change,
no blocking launcher -- Hydra's submitit launcher waits for every job, a sweep must survive the login
shell). Overrides whose first key is a stage config field go to every point of every stage, applied last
(over the definition's stage and block overrides; one naming a grid axis or a per-point field such as
``seed`` is refused); the others edit the sweep definition. Every point's config is composed and validated BEFORE anything is submitted:
one bad key fails the whole sweep with the key named and nothing queued.

Then: ``manifest.json`` is written (atomically), ONE array job per stage is submitted with per-task
dependencies, plus the report job (see ``jobs/sweep/submit.py`` for how and why), every job id is appended to
``jobs.jsonl``, and the command returns. Running it again on the same sweep folder submits only what is
neither done nor still queued: it never duplicates a task and never overwrites a finished run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from jobs.config.cluster import profile_to_dict
from jobs.sweep.cost import print_costs
from jobs.sweep.expand import PointComposer, SweepError, compose_sweep, enabled_stages, expand
from jobs.sweep.launch import DEFAULT_RUNNER
from jobs.sweep.manifest import MANIFEST, Manifest, read_manifest, write_manifest
from jobs.sweep.driver import lock_plan_submit
from jobs.sweep.submit import StageProfiles, Submission, plan, submit
from jobs.config.sweep import SweepConfig


def build_manifest(sweep: SweepConfig, composer: PointComposer | None = None) -> tuple[Manifest, StageProfiles]:
    """Expand and validate everything (no file is written, nothing is submitted): the manifest, and each job's
    cluster profile merged from what the manifest records and validated, once (what :func:`submit` uses)."""
    tasks = expand(sweep, composer)
    stages = enabled_stages(sweep)
    resources = {s: dict(sweep.stages[s].resources) for s in stages if sweep.stages[s].resources}
    definition = OmegaConf.to_container(OmegaConf.structured(sweep))
    assert isinstance(definition, dict)
    manifest = Manifest(
        name=sweep.name,
        sweep_dir=str(Path(sweep.sweep_dir).expanduser().resolve()),
        definition=definition,  # type: ignore[arg-type]
        cluster=profile_to_dict(sweep.cluster),
        stages=stages,
        tasks=tasks,
        stage_resources=resources,
        report=asdict(sweep.report),
    )
    # The sweep's profile as composed (validated then); each stage's resources merged and validated now, not at
    # sbatch time.
    profiles = StageProfiles(manifest, sweep.cluster, error=SweepError).merge([*stages, "report"])
    return manifest, profiles


def run_sweep(name: str, overrides: list[str], *, dry_run: bool = False, printer: Any = print,
              runner: str = DEFAULT_RUNNER) -> Submission:
    """Compose, expand, write the manifest and submit; returns what was queued."""
    return submit_sweep(compose_sweep(name, overrides), dry_run=dry_run, printer=printer, runner=runner)


def submit_sweep(sweep: SweepConfig, *, dry_run: bool = False, printer: Any = print,
                 runner: str = DEFAULT_RUNNER) -> Submission:
    """Expand and validate ``sweep``, write its manifest, submit what is neither done nor queued."""
    manifest, profiles = build_manifest(sweep)
    sweep_dir = Path(manifest.sweep_dir)
    if dry_run:
        p = plan(manifest, [], {})
        printer(f"# sweep {manifest.name} -> {sweep_dir}: {len(manifest.tasks)} tasks in stages "
                f"{manifest.stages}; {p.summary()} (dry run: nothing submitted or written)")
        print_costs(manifest, profiles.__getitem__, printer, sweep.estimate.train_samples)
        return submit(manifest, p, dry_run=True, printer=printer, profiles=profiles)
    # The cost and its warnings before anything is queued (a warning, not a refusal: the estimate may be unknown
    # or pessimistic; the user reads it and decides). The table itself is the dry run's.
    print_costs(manifest, profiles.__getitem__, printer, sweep.estimate.train_samples, with_table=False)

    def write() -> None:
        if (sweep_dir / MANIFEST).is_file():
            old = read_manifest(sweep_dir)
            manifest.created = old.created
            gone = {t.key for t in old.tasks} - {t.key for t in manifest.tasks}
            if gone:
                printer(f"[sweep] note: {len(gone)} task(s) of the previous manifest are not in this grid; "
                        "their run folders are kept")
        write_manifest(sweep_dir, manifest)

    sub = lock_plan_submit(manifest, tag="sweep", prepare=write, nothing="nothing to submit", printer=printer,
                           runner=runner, profiles=profiles,
                           describe=lambda p: f"{manifest.name}: {len(manifest.tasks)} tasks in {manifest.stages}; "
                                              f"{p.summary()}")
    if not sub.submission_id:
        return sub
    arrays = ", ".join(f"{s}={j}" for s, j in sub.arrays.items())
    printer(f"[sweep] queued {len(sub.job_ids)} task(s) in {sub.sbatch_calls} submission(s): {arrays}"
            + (f", report={sub.report}" if sub.report else ""))
    printer(f"[sweep] watch it with: simclr-status {shlex.quote(str(sweep_dir))} --watch")
    return sub


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simclr-sweep", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="sweep definition: jobs/conf/sweep/<name>.yaml")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (sweep keys, or stage config keys)")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch scripts, submit nothing")
    args = parser.parse_intermixed_args(argv)  # options anywhere among the overrides
    t0 = time.perf_counter()
    try:
        run_sweep(args.name, args.overrides, dry_run=args.dry_run)
    except SweepError as e:
        print(f"simclr-sweep: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"simclr-sweep: error: {e}", file=sys.stderr)
        return 2
    if not args.dry_run:
        print(f"[sweep] submitted in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
