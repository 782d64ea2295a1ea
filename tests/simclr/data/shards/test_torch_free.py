"""simclr/data/shards/ stays torch-free: importing any of its modules, and running the shard job end to end
(write a split, its label fractions, the reuse check), never imports torch or torchvision (importing torch costs
seconds: "rerunning the demo's shard stage is instant")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[4]

_CHECK = """
import importlib, pkgutil, sys
import simclr.data.shards as pkg
for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    importlib.import_module(m.name)
for name in sys.argv[2:]:
    importlib.import_module(name)
if sys.argv[1] != "-":
    from jobs.cli.shards import main
    assert main(["--source", "arrays", "--input", sys.argv[1], "--out", sys.argv[1] + ".root", "--shard-size", "8",
                 "--fractions", "0.5", "--quiet"]) == 0
    assert main(["--source", "arrays", "--input", sys.argv[1], "--out", sys.argv[1] + ".root", "--shard-size", "8",
                 "--fractions", "0.5", "--quiet"]) == 0  # reused: opened and checked
print(sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""


def _torch_modules(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", _CHECK, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-1]


def test_the_shards_package_and_the_shard_job_never_import_torch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    npz = tmp_path / "arrays.npz"
    np.savez(npz, train_images=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8), train_labels=np.arange(20) % 2,
             test_images=rng.integers(0, 255, (6, 8, 8), dtype=np.uint8), test_labels=np.arange(6) % 2)
    assert _torch_modules(str(npz), "jobs.cli.shards") == "[]"
    assert (tmp_path / "arrays.npz.root" / "train" / "fractions" / "50percent.txt").is_file()


def test_the_check_sees_torch_when_it_is_imported() -> None:
    """The check can fail: the training loader imports torch, and the same check says so."""
    assert "torch" in _torch_modules("-", "simclr.data.loading.loader")
