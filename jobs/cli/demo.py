"""``make demo``: SimCLRv2 end to end on Fashion-MNIST through the (local) SLURM cluster.

1. the data: Fashion-MNIST (Debian's ``dataset-fashion-mnist``) -> WebDataset shards + class-balanced 1% and
   10% key lists (reused when a valid data root is already there);
2. the sweep ``jobs/conf/sweep/demo.yaml``: one SLURM array job per stage with per-task dependencies
   (pretrain two widths -> finetune 1%/10% from head layer 1 and 0, linear eval -> distillation; supervised
   baselines beside them; the report job last). Tasks already done are not run again; tasks still queued
   are not submitted twice; so rerunning the demo after an interruption resumes it;
3. a live status view until everything has ended; then the path of report.html and a short summary.

Any sweep override works here too (``python -m jobs.cli.demo data.root=/data/fmnist cluster=example_gpu``);
``--sweep NAME`` picks another sweep definition, ``--no-watch`` returns once everything is queued, ``--dry-run``
prints each stage's cost (jobs/sweep/cost.py) and the sbatch scripts without making data or submitting.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from jobs.sweep.expand import SweepError, compose_sweep
from jobs.cli.sweep import submit_sweep
from jobs.sweep.status import watch
from simclr.data.errors import DataError

DEFAULT_DATA_ROOT = Path(os.environ.get("SIMCLR_DATA_ROOT", Path.home() / ".cache/simclr-suite/data/fashion-mnist"))


def prepare_data(root: Path) -> None:
    """Shards + key lists of Fashion-MNIST under ``root`` (instant when they are there and intact)."""
    from jobs.cli.shards import main as shards_main

    code = shards_main(["--source", "fashion_mnist", "--out", str(root), "--fractions", "0.01", "0.1", "--seed", "0"])
    if code != 0:
        raise SystemExit(f"demo: making the Fashion-MNIST shards under {root} failed (exit {code})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.cli.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the sweep (and of every stage config)")
    ap.add_argument("--sweep", default="demo", help="sweep definition in jobs/conf/sweep (default: demo)")
    ap.add_argument("--no-watch", action="store_true", help="return once everything is queued")
    ap.add_argument("--dry-run", action="store_true",
                    help="print each stage's cost and the sbatch scripts; no data is made, nothing submitted")
    args = ap.parse_intermixed_args(argv)  # options anywhere among the overrides
    logging.basicConfig(level=logging.WARNING)
    t0 = time.time()

    overrides = list(args.overrides)
    try:
        return _run(args, overrides, t0)
    # A bad override or sweep definition, or data that is broken or too small for a task (the pre-queue check,
    # jobs/sweep/preflight.py): nothing was queued, one line as simclr-sweep prints it, not a traceback.
    except (SweepError, DataError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, overrides: list[str], t0: float) -> int:
    from jobs.config.compose import parse_overrides

    # As Hydra reads them (quotes removed, `+data.root=`, the last one wins), not by string prefix.
    parsed = parse_overrides(overrides, error=SweepError)
    roots = [Path(str(o.value)) for o in parsed if o.key == "data.root" and o.sets_value]
    root = roots[-1] if roots else None
    data_group = any(o.key == "data" and o.kind != "delete" for o in parsed)
    if root is None and not data_group:
        root = DEFAULT_DATA_ROOT
        overrides.append(f"data.root={root}")
    if root is not None and not data_group and not args.dry_run:
        print(f"[demo] data: Fashion-MNIST shards in {root}")
        prepare_data(root)

    sweep = compose_sweep(args.sweep, overrides)
    if args.dry_run:
        submit_sweep(sweep, dry_run=True)
        return 0
    submit_sweep(sweep)
    sweep_dir = Path(sweep.sweep_dir)
    if args.no_watch:
        print(f"[demo] queued; watch with: simclr-status {shlex.quote(str(sweep_dir))} --watch")
        return 0
    try:
        ok = watch(sweep_dir, title=f"demo sweep {sweep_dir}")
    except KeyboardInterrupt:
        print(f"\n[demo] interrupted: the jobs keep running on the cluster. Rerun `make demo` to resume watching "
              f"(finished runs are kept), or `simclr-cancel {shlex.quote(str(sweep_dir))}` to stop them.")
        return 130
    minutes = (time.time() - t0) / 60
    report = sweep_dir / "report" / "report.html"
    print(f"\n[demo] finished in {minutes:.1f} min; {'all tasks done' if ok else 'SOME TASKS FAILED (see above)'}")
    if report.is_file():
        from analysis.collect import collect
        from analysis.summary import summarize

        print(f"[demo] report: {report}")
        for line in summarize(collect(sweep_dir).runs):  # the sweep folder: only its manifest's runs
            print(f"  - {line}")
    else:
        print(f"[demo] no report at {report}: see the report job's log under {sweep_dir}")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
