"""``simclr-status SWEEP_DIR [--watch [SECONDS]]``: the sweep as a table of stage x config point.

Columns: state (the run folder's ``status.json`` wins once written: DONE / FAILED), restarts (the run's own
count from ``progress.json``, else SLURM's requeue count), progress step/total, the last key metric of the
stage, the job id and the run folder. Then one summary line (:mod:`jobs.sweep.status`). ``--watch`` redraws
until every task and the report have ended (the demo's live view); ``--json`` prints the rows for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from jobs.sweep.status import collect, render, summary, watch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simclr-status", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--watch", nargs="?", const=5.0, type=float, metavar="SECONDS",
                        help="redraw every SECONDS (default 5) until everything has ended")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--full-paths", action="store_true", help="absolute run folders")
    args = parser.parse_args(argv)
    try:
        if args.watch is not None:
            return 0 if watch(args.sweep_dir, args.watch, full_paths=args.full_paths) else 1
        rows, report = collect(args.sweep_dir)
        if args.json:
            print(json.dumps({"tasks": [asdict(r) for r in rows], "report": asdict(report) if report else None,
                              "summary": summary(rows, report)}))
        else:
            print(render(rows, report, args.sweep_dir, full_paths=args.full_paths))
        return 0
    except ValueError as e:
        print(f"simclr-status: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
