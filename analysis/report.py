"""The report command: a sweep (or any tree of run folders) -> tables, plots, report.md, report.html.

Usage::

    python -m analysis.report SWEEP_DIR_OR_RUN_TREE [MORE ...] [--out DIR] [--workers N]
    simclr-report SWEEP_DIR_OR_RUN_TREE            # the same, as a console script

Runs as a sweep's last SLURM job and by hand. Writes under ``--out`` (default
``<first root>/report/``)::

    runs.csv (+ runs.parquet when pyarrow is importable)   one row per run folder
    groups.csv                                             one row per group over seeds
    tables/<name>.{md,csv,tex}                              the ablation tables
    figures/<name>.{png,svg}                                the plots
    report.md, report.html (self-contained), warnings.txt

A damaged run (truncated metrics line, missing metric, no config, mixed sweeps) gives a warning
naming the file and the rest of the report is still made. Exit status: 0 report written, 1 no run
folders found (an empty report is still written), 2 bad arguments or a root that does not exist.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.baselines import PixelKnn, pixel_knn_of_pretraining
from analysis.collect import Collection, collect
from analysis.compare import Comparison, comparisons
from analysis.groups import check_groups, group_runs
from analysis.pages import Section, render_html, render_markdown
from analysis.plots import FigureFile, all_figures
from analysis.summary import summarize
from analysis.table_render import Table, write_table
from analysis.tables import all_tables

__all__ = ["ReportResult", "build_report", "main", "summarize"]

MAX_PAGE_WARNINGS = 500  # on report.md/html; warnings.txt has them all


@dataclass
class ReportResult:
    """What ``build_report`` made: the folder, the data and every artefact, plus the warnings."""

    out: Path
    collection: Collection
    groups: pd.DataFrame
    tables: list[Table]
    figures: list[FigureFile]
    summary: list[str]
    warnings: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _write_runs(runs: pd.DataFrame, out: Path, warnings: list[str]) -> list[Path]:
    paths = [out / "runs.csv"]
    runs.to_csv(paths[0], index=False)
    try:
        import pyarrow  # noqa: F401  (optional: not a dependency of the suite)
    except ImportError:
        return paths
    try:
        frame = runs.copy()
        for col in frame.columns[frame.dtypes == object]:  # mixed None/bool/str -> strings for Arrow
            frame[col] = frame[col].map(lambda v: None if v is None else str(v))
        frame.to_parquet(out / "runs.parquet", index=False)
        paths.append(out / "runs.parquet")
    except Exception as err:  # an Arrow type problem must not cost the rest of the report
        warnings.append(f"{out / 'runs.parquet'}: not written ({type(err).__name__}: {err})")
    return paths


def build_report(roots: str | Path | Sequence[str | Path], out: str | Path | None = None, *, workers: int | None = None,
                 max_curve_points: int = 200, title: str | None = None,
                 collection: Collection | None = None) -> ReportResult:
    """Collect the runs under ``roots`` and write the whole report to ``out`` (see module docstring).

    ``collection``: an already collected :class:`Collection` of those roots (skips reading them again).
    ``workers``: processes for reading run folders and drawing figures; None = automatic (figures drawn
    in up to 4 processes when this process may use 4 or more CPUs, folders read in one).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    collect_workers = 1 if workers is None else workers
    # Forked figure workers pay off only with cores to spare (on 2 shared cores they were slower).
    figure_workers = (min(4, cpus) if cpus >= 4 else 1) if workers is None else workers
    root_list = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    if not root_list:
        raise ValueError("roots: at least one sweep folder or run tree is needed")
    out_dir = Path(out) if out is not None else root_list[0] / "report"
    if collection is None:
        collection = collect(root_list, workers=collect_workers, max_curve_points=max_curve_points,
                             exclude=[out_dir])
    runs = collection.runs
    warnings = list(collection.warnings)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _write_runs(runs, out_dir, warnings)

    groups = group_runs(runs)
    warnings += check_groups(runs)
    comps: list[Comparison] = []
    pixel: dict[str, PixelKnn] = {}
    try:
        comps = comparisons(runs)
        pixel = pixel_knn_of_pretraining(runs)
    except Exception as err:  # keep going: the runs table and the plots still come
        warnings.append(f"comparisons: failed ({type(err).__name__}: {err}); {traceback.format_exc(limit=2)}")
    groups.to_csv(out_dir / "groups.csv", index=False)
    files.append(out_dir / "groups.csv")

    tables: list[Table] = []
    try:
        tables = [t for t in all_tables(runs, groups, comps, pixel) if not t.empty]
    except Exception as err:  # keep going: a table bug must not cost the runs table and the plots
        warnings.append(f"tables: failed ({type(err).__name__}: {err}); {traceback.format_exc(limit=2)}")
    for t in tables:
        files += write_table(t, out_dir / "tables")
    by_name = {t.name: t for t in tables}
    empty = pd.DataFrame()
    figures: list[FigureFile] = []
    try:
        figures = all_figures(groups, collection.curves, by_name["semi_supervised_gain"].numeric
                              if "semi_supervised_gain" in by_name else empty,
                              by_name["distillation"].numeric if "distillation" in by_name else empty,
                              out_dir / "figures", workers=figure_workers)
    except Exception as err:
        warnings.append(f"figures: failed ({type(err).__name__}: {err}); {traceback.format_exc(limit=2)}")
    files += [p for f in figures for p in (f.png, f.svg)]
    summary = summarize(runs, pixel=pixel, comps=comps)

    n_done = int((runs["state"] == "done").sum()) if not runs.empty else 0
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    subtitle = (f"{len(runs)} run folder(s) under {', '.join(map(str, root_list))}; {n_done} done, "
                f"{int(runs['usable'].sum()) if not runs.empty else 0} in the numbers. Generated {stamp}.")
    sections = [Section("Summary", bullets=summary)]
    status = [t for t in tables if t.name in ("run_status", "runs_not_in_numbers")]
    if status:
        sections.append(Section("Runs", tables=status))
    results = [t for t in tables if t.name not in ("run_status", "runs_not_in_numbers")]
    if results:
        sections.append(Section("Tables", tables=results))
    if figures:
        sections.append(Section("Figures", figures=figures))
    if warnings:
        shown = warnings[:MAX_PAGE_WARNINGS] + ([f"... {len(warnings) - MAX_PAGE_WARNINGS} more in warnings.txt"]
                                               if len(warnings) > MAX_PAGE_WARNINGS else [])
        sections.append(Section(f"Warnings ({len(warnings)})", bullets=shown, collapsed=len(warnings) > 20))
    page_title = title or f"SimCLRv2 sweep report: {root_list[0].resolve().name}"
    (out_dir / "report.md").write_text(render_markdown(page_title, sections, out_dir) + f"\n{subtitle}\n",
                                       encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(page_title, sections, subtitle), encoding="utf-8")
    (out_dir / "warnings.txt").write_text("".join(w + "\n" for w in warnings), encoding="utf-8")
    files += [out_dir / "report.md", out_dir / "report.html", out_dir / "warnings.txt"]
    return ReportResult(out=out_dir, collection=collection, groups=groups, tables=tables, figures=figures,
                        summary=summary, warnings=warnings, files=files)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``simclr-report``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="simclr-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, metavar="SWEEP_DIR_OR_RUN_TREE",
                        help="sweep folder(s) or any folder tree holding run folders")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first root>/report)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes reading run folders and drawing figures (default: automatic)")
    parser.add_argument("--max-warnings", type=int, default=20, help="warnings echoed to stderr (all in warnings.txt)")
    args = parser.parse_intermixed_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    for root in args.roots:
        if not root.is_dir():
            print(f"simclr-report: error: SWEEP_DIR_OR_RUN_TREE {str(root)!r} is not a folder", file=sys.stderr)
            return 2
    result = build_report(args.roots, args.out, workers=args.workers)
    for w in result.warnings[: args.max_warnings]:
        print(f"warning: {w}", file=sys.stderr)
    if len(result.warnings) > args.max_warnings:
        print(f"... {len(result.warnings) - args.max_warnings} more warning(s) in {result.out / 'warnings.txt'}",
              file=sys.stderr)
    for line in result.summary:
        print(line)
    print(f"report: {result.out / 'report.html'}")
    return 0 if len(result.collection.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
