"""simclr.dist: single-process fallbacks, environment parsing, and 2-process gloo behaviour."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from simclr import dist

torch.set_num_threads(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _set_env(rank: int, world: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip


# ---------------------------------------------------------------- single process


def test_single_process_fallbacks() -> None:
    assert (dist.rank(), dist.world_size(), dist.is_distributed()) == (0, 1, False)
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.gather_with_grad(x) is x
    assert dist.all_reduce_mean(x) is x
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert dist.convert_sync_bn(model) is model
    dist.barrier()
    dist.cleanup()


def test_init_without_world_creates_no_group() -> None:
    info = dist.init_distributed(backend="gloo", env={})
    assert (info.rank, info.world_size, info.backend) == (0, 1, None)
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "1234"}, "MASTER_ADDR"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT"),
        ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE"),
    ],
)
def test_init_rejects_bad_environment(env: dict[str, str], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        dist.init_distributed(backend="gloo", env=env)


def test_init_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="backend"):
        dist.init_distributed(backend="mpi", env={})
    with pytest.raises(ValueError, match="timeout_s"):
        dist.init_distributed(timeout_s=0, env={})


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node1", ["node1"]),
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("gpu[08-10,12],cpu3", ["gpu08", "gpu09", "gpu10", "gpu12", "cpu3"]),
        ("a,b[2]", ["a", "b2"]),
    ],
)
def test_expand_slurm_nodelist(nodelist: str, hosts: list[str]) -> None:
    assert dist.expand_slurm_nodelist(nodelist) == hosts


def test_expand_slurm_nodelist_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="SLURM_JOB_NODELIST"):
        dist.expand_slurm_nodelist("node[a-b]")


def test_env_prefers_submitit_exports_then_slurm() -> None:
    exported = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": "29500", "SLURM_PROCID": "0", "SLURM_NTASKS": "9",
                "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_ID": "7"}  # fmt: skip
    assert dist.env_from_slurm(exported) == {
        "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }  # fmt: skip
    slurm = {"SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0",
             "SLURM_JOB_NODELIST": "node[3-4]", "SLURM_JOB_ID": "1234"}  # fmt: skip
    env = dist.env_from_slurm(slurm)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_ADDR"]) == ("2", "4", "0", "node3")
    assert 20000 <= int(env["MASTER_PORT"]) < 30000
    # every task of the job derives the same port
    assert dist.env_from_slurm(dict(slurm, SLURM_PROCID="0"))["MASTER_PORT"] == env["MASTER_PORT"]


# ---------------------------------------------------------------- two processes (gloo)


def _gather_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    _set_env(rank, 2, port)
    info = dist.init_distributed(backend="gloo", timeout_s=60)
    try:
        assert (info.rank, info.world_size, dist.is_distributed()) == (rank, 2, True)
        x = torch.full((2, 3), float(rank + 1), requires_grad=True)
        g = dist.gather_with_grad(x)  # [[1]*3, [1]*3, [2]*3, [2]*3]
        # each rank weights the gathered rows differently; rank r's x gets the SUM over ranks
        w = torch.arange(4.0).view(4, 1) * (rank + 1)
        (g * w).sum().backward()
        mean = dist.all_reduce_mean(torch.tensor([float(rank)]))
        torch.save({"g": g.detach(), "grad": x.grad, "mean": mean}, Path(out_dir) / f"{rank}.pt")
    finally:
        dist.cleanup()


@pytest.mark.slow
def test_gather_with_grad_two_processes(tmp_path: Path) -> None:
    mp.spawn(_gather_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    expected = torch.tensor([1.0, 1.0, 2.0, 2.0]).view(4, 1).expand(4, 3)
    assert torch.equal(r0["g"], expected) and torch.equal(r1["g"], expected)
    # d/dx_r of sum_ranks sum(g * w_rank): rows of rank r are indices 2r, 2r+1, weights i*(1+2)
    assert torch.equal(r0["grad"], torch.tensor([[0.0] * 3, [3.0] * 3]))
    assert torch.equal(r1["grad"], torch.tensor([[6.0] * 3, [9.0] * 3]))
    assert r0["mean"].item() == r1["mean"].item() == 0.5


def _dead_peer_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    _set_env(rank, 2, port)
    dist.init_distributed(backend="gloo", timeout_s=5)
    if rank == 1:
        os._exit(0)  # dies without a word, like a killed node
    t0 = time.monotonic()
    error = ""
    try:
        time.sleep(0.5)
        torch.distributed.all_reduce(torch.ones(1))
    except Exception as e:  # noqa: BLE001 - any error is what we want to see
        error = f"{type(e).__name__}: {e}"
    Path(out_dir, "result.txt").write_text(f"{time.monotonic() - t0:.1f}\n{error}")
    os._exit(0)  # destroy_process_group could wait on the dead peer


@pytest.mark.slow
def test_dead_rank_makes_the_other_fail_not_hang(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_dead_peer_worker, args=(r, port, str(tmp_path))) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank hung on a dead peer"
    elapsed, error = (tmp_path / "result.txt").read_text().split("\n", 1)
    assert error, "the collective with a dead peer did not fail"
    assert float(elapsed) < 30
