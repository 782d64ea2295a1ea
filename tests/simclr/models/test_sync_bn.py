"""Global BN: conversion keeps the weights; 2 gloo ranks normalise with global-batch statistics."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from simclr import dist
from simclr.models.heads import ProjectionHead
from simclr.models.sync_bn import SyncBatchNorm, convert_sync_batchnorm

torch.set_num_threads(1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(8),
        ProjectionHead(8, num_layers=2, out_dim=4),  # ends in a scale-only BN1d (no bias)
    )  # fmt: skip


def test_conversion_shares_parameters_and_keeps_scale_only_bn() -> None:
    net = _net()
    net(torch.randn(2, 3, 5, 5))  # materialise the lazy layer
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ids = {id(p) for p in net.parameters()}
    conv = convert_sync_batchnorm(net)
    bns = [m for m in conv.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 3 and all(isinstance(m, SyncBatchNorm) for m in bns)
    assert bns[-1].bias is None
    assert {id(p) for p in conv.parameters()} == ids
    assert set(conv.state_dict()) == set(before)
    # single process: behaves as plain BN
    x = torch.randn(6, 3, 5, 5)
    assert torch.allclose(conv(x)[0], _net_like(before)(x)[0], atol=1e-6)


def _net_like(state: dict[str, torch.Tensor]) -> nn.Module:
    net = _net()
    net(torch.randn(2, 3, 5, 5))
    net.load_state_dict(state)
    return net


def _worker(rank: int, port: int, out_dir: str, x: torch.Tensor, state: dict, device: str) -> None:
    torch.set_num_threads(1)
    torch.backends.cudnn.allow_tf32 = False  # compare with the float32 CPU reference
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    dist.init_distributed(backend="gloo", timeout_s=60)
    try:
        net = dist.convert_sync_bn(_net_like(state)).to(device)
        mine = x[rank * 3 : rank * 3 + 3].clone().to(device).requires_grad_(True)
        z, _ = net(mine)
        # the ranks' losses add up to the global-batch loss; summing their parameter gradients
        # then gives its gradient (DDP averages instead, with losses that are local means)
        (z.pow(3).sum() / 6).backward()
        grads = {k: p.grad.clone() for k, p in net.named_parameters()}
        for g in grads.values():
            torch.distributed.all_reduce(g)
        cpu = {k: v.cpu() for k, v in grads.items()}
        torch.save({"z": z.detach().cpu(), "x_grad": mine.grad.cpu(), "grads": cpu,
                    "buffers": {k: b.cpu() for k, b in net.named_buffers()}},
                   Path(out_dir) / f"{rank}.pt")  # fmt: skip
    finally:
        dist.cleanup()


DEVICES = [
    "cpu",
    # gloo with CUDA tensors, both ranks on one GPU: exercises torch's CUDA SyncBatchNorm path
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_two_ranks_equal_global_batch_norm(tmp_path: Path, device: str) -> None:
    net = _net()
    net(torch.randn(2, 3, 5, 5))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(1)
    x = torch.randn(6, 3, 5, 5) * 2 + 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path), x, state, device), nprocs=2, join=True)

    ref = _net_like(state)
    xr = x.clone().requires_grad_(True)
    z, _ = ref(xr)
    (z.pow(3).sum() / 6).backward()
    for r in (0, 1):
        res = torch.load(tmp_path / f"{r}.pt")
        assert torch.allclose(res["z"], z[3 * r : 3 * r + 3].detach(), atol=1e-5)
        assert torch.allclose(res["x_grad"], xr.grad[3 * r : 3 * r + 3], atol=1e-5)  # type: ignore[index]
        for k, p in ref.named_parameters():
            scale = float(p.grad.abs().max()) + 1.0  # float32 sums of large terms: relative tolerance
            assert torch.allclose(res["grads"][k], p.grad, atol=1e-5 * scale, rtol=1e-4), k
        for k, b in ref.named_buffers():
            assert torch.allclose(res["buffers"][k].to(b.dtype), b, atol=1e-6), k
