"""`make bench`: run every benchmark module in turn (each writes benchmarks/results/NAME.json).

    python -m benchmarks.run_all [--only NAME ...] [--quick]
"""

from __future__ import annotations

import argparse
import pkgutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run by hand on a GPU machine only / long ones: not in the default set.
EXCLUDED = {"run_all", "gpu_step", "demo_quality"}


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_") and m.name not in EXCLUDED)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--quick", action="store_true", help="pass --quick to each (smoke run)")
    args = ap.parse_args(argv)
    failed = []
    for name in args.only or names():
        cmd = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if args.quick else [])
        print(f"== {' '.join(cmd)}", flush=True)
        if subprocess.run(cmd, cwd=HERE.parent).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
