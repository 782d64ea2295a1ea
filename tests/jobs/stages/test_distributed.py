"""Multi-process stages on CPU (gloo): equal to one process on the same global batch; a dead rank never hangs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from jobs.config.stage import compose, to_dict
from jobs.stages.runner import run_stage

pytestmark = pytest.mark.slow
TINY = ["model.width=0.125", "data.image_size=16", "train.batch_size=32", "train.log_every=1", "train.channels_last=false",
        "pretrain.knn_every_epochs=0", "pretrain.knn_train_samples=100", "train.epochs=1", "train.dist_timeout_s=20",
        "optim.base_lr=0.01"]  # a moderate LR: float reordering must not be amplified into chaos

CHILD = r"""
import json, os, sys
import torch
torch.set_num_threads(1)
cfg = json.loads(sys.argv[1])
die_after = int(os.environ.get("TEST_DIE_AFTER", "0"))
if die_after and os.environ["RANK"] == "1":
    import simclr.train.loop as loop
    calls = {"n": 0}
    def requested():
        calls["n"] += 1
        if calls["n"] >= die_after:
            os._exit(3)   # a rank that dies without a word
        return False
    loop.preempt.requested = requested
from jobs.stages.runner import run_stage
print(json.dumps(run_stage(cfg)["state"]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(cfg: dict[str, Any], world: int, extra_env: dict[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "OMP_NUM_THREADS": "1", **(extra_env or {})}
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["value"] for r in rows if r["split"] == "train" and r["name"] == "contrastive_loss"]


# SimCLRv2's memory: 100 entries (the queue wraps mid-batch at step 4), a fast-moving memory network.
MEMORY = ["pretrain.memory_size=100", "pretrain.memory_momentum=0.9"]


@pytest.mark.parametrize("extra", [[], MEMORY, [*MEMORY, "pretrain.memory_positive=memory"]],
                         ids=["plain", "memory", "memory-positive"])
def test_two_ranks_match_one_process_on_the_same_global_batch(tiny_root: Path, tmp_path: Path, extra: list[str]) -> None:
    one = compose("pretrain", [f"run_dir={tmp_path / 'one'}", f"data.root={tiny_root}", *TINY, *extra])
    assert run_stage(one)["state"] == "done"
    two = to_dict(compose("pretrain", [f"run_dir={tmp_path / 'two'}", f"data.root={tiny_root}", *TINY, *extra]))
    procs = launch(two, 2)
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(a) == len(b) == 7  # 240 images / global batch 32
    # Same global batch, negatives gathered across ranks, global BN: the same loss up to float reordering.
    assert a == pytest.approx(b, rel=1e-4, abs=1e-4)
    status = json.loads((tmp_path / "two" / "status.json").read_text())
    assert status["world_size"] == 2
    if extra:  # the queue too: the gathered projections of both ranks, in the 1-process run's order
        from simclr.train import checkpoint as ckpt

        m1, m2 = (ckpt.load_latest(tmp_path / r / "checkpoints")[0]["memory"] for r in ("one", "two"))  # type: ignore[index]
        assert (m1["ptr"], m1["fill"]) == (m2["ptr"], m2["fill"]) == (7 * 32 % 100, 100)
        assert torch.allclose(m1["queue"], m2["queue"], atol=1e-4)
        for k in m1["network"]:
            assert torch.allclose(m1["network"][k].float(), m2["network"][k].float(), atol=1e-4), k


def test_a_killed_rank_makes_the_other_fail_within_the_timeout(tiny_root: Path, tmp_path: Path) -> None:
    cfg = to_dict(compose("pretrain", [f"run_dir={tmp_path / 'dead'}", f"data.root={tiny_root}", *TINY]))
    t0 = time.time()
    procs = launch(cfg, 2, {"TEST_DIE_AFTER": "3"})
    codes = []
    for p in procs:
        p.communicate(timeout=120)  # never a hang: bounded by train.dist_timeout_s=20 + start-up
        codes.append(p.returncode)
    assert all(c != 0 for c in codes), codes
    assert time.time() - t0 < 120
    status = json.loads((tmp_path / "dead" / "status.json").read_text())
    assert status["state"] == "failed" and status["reason"]


@pytest.mark.cluster
def test_the_same_two_rank_run_as_a_two_node_slurm_job(tiny_root: Path, tmp_path: Path) -> None:
    """The 2-rank pretrain of the first test, now as ONE task on 2 emulated nodes of the local cluster
    (submitit's environment -> gloo), equals the 1-process run on the same global batch."""
    import dataclasses

    from jobs.config.cluster import load_profile, make_executor
    from jobs.sweep.launch import StageTask

    one = compose("pretrain", [f"run_dir={tmp_path / 'one'}", f"data.root={tiny_root}", *TINY])
    assert run_stage(one)["state"] == "done"
    two = to_dict(compose("pretrain", [f"run_dir={tmp_path / 'two'}", f"data.root={tiny_root}", *TINY]))
    profile = dataclasses.replace(load_profile("local"), nodes=2, tasks_per_node=1, time_min=15, signal_delay_s=30)
    job = make_executor(profile, tmp_path / "submitit" / "%j", job_name="ddp-2node").submit(StageTask(two))
    deadline = time.time() + 300
    while not job.done() and time.time() < deadline:
        time.sleep(2)
    assert job.done(), "the 2-node job did not finish in 5 minutes"
    results = job.results()
    assert [r["state"] for r in results] == ["done", "done"]
    status = json.loads((tmp_path / "two" / "status.json").read_text())
    assert status["world_size"] == 2
    assert losses(tmp_path / "one") == pytest.approx(losses(tmp_path / "two"), rel=1e-4, abs=1e-4)


def test_two_ranks_pretrain_on_mostly_unlabelled_images(tmp_path: Path) -> None:
    """The online probe under DDP when a rank's batch holds no label: the probe's parameters must still take
    part in every step (the gradient reduction failed on the next step: 'Expected to have finished reduction'),
    and its metrics average over the ranks that measured them."""
    import numpy as np

    from simclr.data.shards.sources import array_samples
    from simclr.data.shards.sources.fashion_mnist import fashion_mnist_samples
    from simclr.data.shards.write import write_shards

    src = fashion_mnist_samples("test")
    root = tmp_path / "data"
    labels = np.full(240, -1, dtype=np.int64)
    labels[:3] = src.labels[:3]  # 3 labelled images of 240: most per-rank batches have none
    names = list(src.class_names)
    write_shards(array_samples(src.images[:240], labels, names, key_prefix="tr"), root, split="train", max_count=64)
    write_shards(array_samples(src.images[240:340], src.labels[240:340], names, key_prefix="te"), root,
                 split="test", max_count=64)
    cfg = to_dict(compose("pretrain", [f"run_dir={tmp_path / 'two'}", f"data.root={root}", *TINY]))
    procs = launch(cfg, 2)
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    probe = [r["value"] for r in rows if r["split"] == "train" and r["name"] == "probe_top1"]
    assert len(losses(tmp_path / "two")) == 7 and 0 < len(probe) < 7  # logged at the steps some rank measured it
    assert all(0.0 <= v <= 100.0 for v in probe)
