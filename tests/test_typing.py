"""The type hints are checked, not only written: mypy over the packages (strict on simclr/, pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_finds_no_errors() -> None:
    # The cache outside the checkout: a cold start took 15 s here (2 cores), a rerun less.
    cache = Path(os.environ.get("SIMCLR_ENV_ROOT", Path.home() / ".cache/simclr-suite")) / "mypy-cache"
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "simclr", "jobs", "analysis", "benchmarks"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
