"""Suite-wide test set-up: gating of the tests that need the local SLURM cluster.

Tests marked ``@pytest.mark.cluster`` get the session fixture ``slurm_cluster`` automatically. When the cluster
is not there (``SLURM_CONF`` unset, or slurmctld / slurmdbd not answering) they SKIP, unless
``SIMCLR_REQUIRE_CLUSTER=1`` (exported by ``source <(slurm/cluster.sh env)``, so ``make test`` and CI), where they
FAIL with the reason: a broken cluster must never turn CI green by skipping.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class SlurmCluster:
    """The cluster the cluster-marked tests run against (the local one of ``slurm/cluster.sh``, or any other)."""

    conf: Path  # SLURM_CONF
    nodes: tuple[str, ...]  # node names as sinfo lists them
    default_partition: str = "debug"
    high_partition: str = "high"  # preempts jobs of the default partition (REQUEUE + user signal)


def _probe(cmd: list[str]) -> str:
    """Runs a SLURM client command with a bound; returns stdout or raises RuntimeError naming the command."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {e}") from e
    if out.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {out.returncode}: {out.stderr.strip()[:300]}")
    return out.stdout


def _find_cluster() -> SlurmCluster:
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        raise RuntimeError("SLURM_CONF is not set (run `make cluster-up && source <(slurm/cluster.sh env)`)")
    if not Path(conf).is_file():
        raise RuntimeError(f"SLURM_CONF={conf} does not exist (run `make cluster-up`)")
    rows = [r.split() for r in _probe(["sinfo", "-h", "-N", "-o", "%N %T"]).splitlines() if r.strip()]
    usable = {"idle", "allocated", "mixed", "completing"}
    nodes = tuple(sorted({n for n, state in rows if state in usable}))
    if not nodes:
        raise RuntimeError(f"no usable node in sinfo (node states: {rows}); see `slurm/cluster.sh status`")
    # submitit polls sacct: without accounting its failure paths hang, so it is part of "answering".
    _probe(["sacct", "-n", "-X", "-S", "now-1minutes"])
    return SlurmCluster(conf=Path(conf), nodes=nodes)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The answering SLURM cluster; skips (or fails under SIMCLR_REQUIRE_CLUSTER=1) when there is none."""
    try:
        return _find_cluster()
    except RuntimeError as e:
        message = f"SLURM cluster not available: {e}"
        if os.environ.get("SIMCLR_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"{message} (SIMCLR_REQUIRE_CLUSTER=1, so this is an error)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def _cluster_gate(request: pytest.FixtureRequest) -> None:
    """Gives every ``cluster``-marked test the ``slurm_cluster`` check, whether it asks for it or not."""
    if request.node.get_closest_marker("cluster") is not None:
        request.getfixturevalue("slurm_cluster")


# ---- data: a tiny real data set for the stage, job and benchmark tests ------------------------------------
@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 train + 100 test real Fashion-MNIST images (28x28 gray), shards of 64; fractions 10% and 50%."""
    from simclr.data.shards.fractions import write_label_fractions
    from simclr.data.shards.sources import array_samples
    from simclr.data.shards.sources.fashion_mnist import DEFAULT_ROOT, fashion_mnist_samples
    from simclr.data.shards.write import write_shards

    if not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (make setup does it)")
    src = fashion_mnist_samples("test")
    root = tmp_path_factory.mktemp("fmnist_tiny")
    names = list(src.class_names)
    write_shards(array_samples(src.images[:240], src.labels[:240], names, key_prefix="tr"), root, split="train", max_count=64)
    write_shards(array_samples(src.images[240:340], src.labels[240:340], names, key_prefix="te"), root, split="test", max_count=64)
    write_label_fractions(root, fractions=(0.1, 0.5), seed=0)
    return root
