"""Benchmark: ``analysis`` collect + report over 1,000 synthetic run folders of 1,000 metric lines each.

    python -m benchmarks.report [--runs 1000] [--lines 1000] [--repeats 3] [--quick]

The sweep is written once into a temporary folder (not timed) by ``analysis.synthetic.write_run``: 10
models (depth × width × SK) × 14 points (pretrain; fine-tune at 3 label fractions × 2 head layers;
supervised at 3 fractions; linear eval; distillation) × 7 seeds = 980 finished runs, plus 20 running,
failed and damaged (truncated last line) runs.

Measured side by side in one process, alternating, best of ``--repeats`` (wall and CPU seconds;
one process each, ``workers=1``):
- value: ``analysis.report.build_report`` end to end (collect, runs.csv, tables, figures, report.md/html);
- baseline: the same report, but each metrics.jsonl read the naive way: ``json.loads`` per line into a
  list of dicts, a pandas DataFrame per run, ``groupby`` per (split, name) series.
Extra fields: collect-only times of both, collect with 2 worker processes, the report phases.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd

from analysis import runfolder
from analysis.collect import collect
from simclr.runfolder.metrics import MetricSeries, MetricsRead
from analysis.report import build_report
from analysis.synthetic import model_config, write_run
from benchmarks._result import write_result

MODELS = [(18, 0.5, 0.0), (18, 1.0, 0.0), (34, 1.0, 0.0), (50, 1.0, 0.0), (50, 1.0, 0.0625), (50, 2.0, 0.0),
          (101, 1.0, 0.0), (101, 2.0, 0.0625), (152, 1.0, 0.0), (152, 3.0, 0.0625)]
FRACTIONS = (0.01, 0.1, 1.0)


def make_sweep(root: Path, n_runs: int, lines: int) -> int:
    """Write ``n_runs`` run folders (finished ones first, ~2% unfinished/damaged); returns the count."""
    written = 0
    seed = 0
    n_bad = max(1, n_runs // 50)
    while written < n_runs - n_bad:
        for d, w, sk in MODELS:
            m = model_config(depth=d, width=w, sk_ratio=sk)
            p = int(d * w * w * 0.5e6)
            size = np.log10(p)
            points: list[dict[str, Any]] = [dict(stage="pretrain", final={"val/knn_top1": 30 + 3 * size})]
            for lf in FRACTIONS:
                base = {0.01: 40.0, 0.1: 60.0, 1.0: 72.0}[lf]
                points += [dict(stage="finetune", ft_proj_selector=ft, label_fraction=lf, top1=base + size + ft)
                           for ft in (0, 1)]
                points.append(dict(stage="supervised", label_fraction=lf, top1=base - 15 * (1 - lf) + size))
            points.append(dict(stage="linear_eval", label_fraction=1.0, top1=55 + size))
            points.append(dict(stage="distill", label_fraction=0.1, top1=58 + size,
                               teacher=f"finetune-teacher-0123abcd-s{seed}"))
            for pt in points:
                if written >= n_runs - n_bad:
                    return written + _bad_runs(root, n_bad, lines)
                top1 = pt.pop("top1", None)
                write_run(root, seed=seed, model=m, params=p, metric_lines=lines,
                          top1=None if top1 is None else top1 + 0.3 * seed, **pt)
                written += 1
        seed += 1
    return written + _bad_runs(root, n_bad, lines)


def _bad_runs(root: Path, n: int, lines: int) -> int:
    for i in range(n):
        state = ("running", "failed", "done")[i % 3]
        write_run(root, stage="finetune", seed=100 + i, ft_proj_selector=1, label_fraction=0.01, state=state,
                  reason="NaN loss" if state == "failed" else None, top1=50.0 if state == "done" else None,
                  truncate_last_line=True, metric_lines=lines)
    return n


def naive_read_metrics(path: str | Path) -> MetricsRead:
    """The baseline reader: json.loads per line, a DataFrame per file, groupby per series."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    out = MetricsRead()
    if not records:
        return out
    df = pd.DataFrame.from_records(records)
    for (split, name), g in df.groupby(["split", "name"], sort=False):
        out.series[(split, name)] = MetricSeries(steps=g["step"].to_numpy(np.int64),
                                                 values=g["value"].to_numpy(np.float64))
    out.n_lines = len(df)
    return out


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call. CPU time is the figure that holds
    up when other people share the 2 cores; wall time is what the goal is about."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 100 runs, 1 repeat, no result file")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.repeats = 100, 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        t0 = time.perf_counter()
        n = make_sweep(tmp / "sweep", args.runs, args.lines)
        load_before = os.getloadavg()[0]
        print(f"wrote {n} run folders x {args.lines} lines in {time.perf_counter() - t0:.1f} s")
        inf = (float("inf"), float("inf"))
        ours_collect = baseline_collect = ours = baseline = inf
        for _ in range(args.repeats):  # alternate so both see the same machine load and page cache
            ours_collect = min(ours_collect, _timed(lambda: collect(tmp / "sweep")))
            with mock.patch.object(runfolder, "read_metrics", naive_read_metrics):
                baseline_collect = min(baseline_collect, _timed(lambda: collect(tmp / "sweep")))
                baseline = min(baseline, _timed(lambda: build_report(tmp / "sweep", tmp / "report-naive", workers=1)))
            ours = min(ours, _timed(lambda: build_report(tmp / "sweep", tmp / "report", workers=1)))
        workers2 = _timed(lambda: collect(tmp / "sweep", workers=2))[0]
        result = build_report(tmp / "sweep", tmp / "report")
        usable = int(result.collection.runs["usable"].sum())
        print(f"report (ours): {ours[0]:.2f} s (CPU {ours[1]:.2f} s)   collect only: {ours_collect[0]:.2f} s   "
              f"collect, 2 workers: {workers2:.2f} s")
        print(f"report (naive reader): {baseline[0]:.2f} s (CPU {baseline[1]:.2f} s)   "
              f"collect only: {baseline_collect[0]:.2f} s")
        print(f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        print(f"{len(result.collection.runs)} runs, {usable} in the numbers, {len(result.groups)} groups, "
              f"{len(result.tables)} tables, {len(result.figures)} figures, {len(result.warnings)} warnings")
        if not args.quick:
            path = write_result(
                "report", ours[0], "s",
                baseline="same report with metrics.jsonl read by json.loads per line into a DataFrame per run",
                baseline_value=baseline[0], goal="< 10 s for 1,000 runs x 1,000 metric lines (collect + report)",
                runs=n, lines_per_run=args.lines, repeats=args.repeats, cpu_s=ours[1], baseline_cpu_s=baseline[1],
                collect_s=ours_collect[0], baseline_collect_s=baseline_collect[0], collect_2_workers_s=workers2,
                groups=len(result.groups), figures=len(result.figures), tables=len(result.tables),
                loadavg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)])
            print(f"-> {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
