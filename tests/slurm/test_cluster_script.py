"""``slurm/cluster.sh`` itself: ``up`` reuses a running healthy cluster untouched, and refuses (naming the port)
to start when a port it needs is taken by a process that is not its own."""

from __future__ import annotations

import os
import random
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "cluster.sh"


def _pids(state_dir: Path) -> dict[str, str]:
    return {p.stem: p.read_text().strip() for p in sorted((state_dir / "pids").glob("*.pid"))}


def test_up_reuses_the_running_cluster() -> None:
    state_dir = os.environ.get("SIMCLR_SLURM_DIR")
    if not state_dir:
        pytest.skip("not the local cluster of slurm/cluster.sh (SIMCLR_SLURM_DIR unset)")
    before = _pids(Path(state_dir))
    assert len(before) == 6, before  # mariadb, slurmdbd, slurmctld, 3 x slurmd
    out = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "reused the running cluster" in out.stderr
    assert _pids(Path(state_dir)) == before


def _free_base() -> int:
    """A base port whose six ports (base..base+5) are all free now."""
    for _ in range(50):
        base = random.randrange(20000, 30000)
        try:
            for port in range(base, base + 6):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range found")


def test_up_names_a_port_taken_by_a_foreign_process(tmp_path: Path) -> None:
    base = _free_base()
    taken = base + 2  # the port of slurmd node2
    env = {**os.environ, "SIMCLR_SLURM_DIR": str(tmp_path / "cluster"), "SIMCLR_SLURM_PORT_BASE": str(base)}
    try:
        with socket.socket() as foreign:
            foreign.bind(("127.0.0.1", taken))
            foreign.listen()
            out = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, timeout=180, env=env)
    finally:  # should the check ever be broken: stop whatever this test's cluster started
        subprocess.run([str(SCRIPT), "down"], capture_output=True, timeout=180, env=env)
    assert out.returncode != 0
    assert f"port {taken}" in out.stderr and "already in use" in out.stderr, out.stderr
    assert _pids(tmp_path / "cluster") == {}, "nothing may start when a port is taken"
