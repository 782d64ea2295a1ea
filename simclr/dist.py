"""Process-group plumbing: rank, world size, differentiable gather, init from the job environment.

Everything falls back to a single process when no process group is initialised, so the library runs
unchanged in tests and on a laptop. Under SLURM the environment comes from submitit's
``helpers.TorchDistributedEnvironment().export()`` (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) or, failing that, from SLURM's own variables.

The differentiable gather is what makes NT-Xent use negatives from ALL ranks with correct gradients
(official objective.py's ``tpu_cross_replica_concat``): backward sums every rank's gradient for the
local slice, which, combined with DDP's gradient averaging, equals the single-process gradient of the
mean loss over the global batch.
"""

from __future__ import annotations

import datetime
import os
import re
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistInfo",
    "rank",
    "world_size",
    "local_rank",
    "is_distributed",
    "is_main_process",
    "gather_with_grad",
    "all_reduce_mean",
    "init_distributed",
    "env_from_slurm",
    "expand_slurm_nodelist",
    "convert_sync_bn",
    "barrier",
    "cleanup",
]

DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: global rank, world size, rank on its node, torch device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None when no process group was created (single process)


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank; 0 without a process group."""
    return dist.get_rank() if _initialized() else 0


def world_size() -> int:
    """Number of processes; 1 without a process group."""
    return dist.get_world_size() if _initialized() else 1


def local_rank() -> int:
    """Rank on this node, from LOCAL_RANK or SLURM_LOCALID; 0 if neither is set."""
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        if key in os.environ:
            return _env_int(os.environ, key)
    return 0


def is_distributed() -> bool:
    """True when a process group with more than one process is active."""
    return _initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return rank() == 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ws = dist.get_world_size()
        ctx.rank, ctx.chunk = dist.get_rank(), x.shape[0]
        x = x.contiguous()
        out = x.new_empty((ws * x.shape[0],) + tuple(x.shape[1:]))
        dist.all_gather_into_tensor(out, x)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            local = grad.new_empty((ctx.chunk,) + tuple(grad.shape[1:]))
            dist.reduce_scatter_tensor(local, grad, op=dist.ReduceOp.SUM)
            return local
        # gloo has no reduce-scatter: sum the whole gathered gradient, keep our slice.
        total = grad.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.rank * ctx.chunk : (ctx.rank + 1) * ctx.chunk]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` [b, ...] from every rank along dim 0 -> [world_size * b, ...], rank order.

    Differentiable: gradients flowing into any rank's copy reach the rank that owns the rows.
    Every rank must pass the same shape. Identity with one process.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)  # type: ignore[no-any-return]


def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over ranks (a new tensor, no gradient); ``x`` itself with one process.
    For metrics such as the loss or accuracy to log."""
    if not is_distributed():
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _env_int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ValueError(f"environment variable {key}={env[key]!r} is not an integer") from None


_NODELIST_ITEM = re.compile(r"([^,\[]+)(?:\[([^\]]*)\])?")


def expand_slurm_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM host list such as ``node[1-3,7],gpu01`` into host names (zero padding kept)."""
    hosts: list[str] = []
    pos = 0
    while pos < len(nodelist):
        m = _NODELIST_ITEM.match(nodelist, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot parse SLURM_JOB_NODELIST {nodelist!r}")
        prefix, ranges = m.group(1), m.group(2)
        if ranges is None:
            hosts.append(prefix)
        else:
            for part in ranges.split(","):
                lo, _, hi = part.partition("-")
                if not lo.isdigit() or (hi and not hi.isdigit()):
                    raise ValueError(f"cannot parse SLURM_JOB_NODELIST {nodelist!r}")
                for i in range(int(lo), int(hi or lo) + 1):
                    hosts.append(f"{prefix}{i:0{len(lo)}d}")
        pos = m.end()
        if pos < len(nodelist):
            if nodelist[pos] != ",":
                raise ValueError(f"cannot parse SLURM_JOB_NODELIST {nodelist!r}")
            pos += 1
    return hosts


def env_from_slurm(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The torch.distributed variables for this process, from the environment.

    Variables exported by submitit's ``TorchDistributedEnvironment`` (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT) win; missing ones come from SLURM_PROCID / SLURM_NTASKS /
    SLURM_LOCALID, the first host of SLURM_JOB_NODELIST, and a port derived from SLURM_JOB_ID.
    Nothing set at all means one process. Returns a dict with the five keys.
    """
    env = os.environ if env is None else env
    out = {
        "RANK": env.get("RANK", env.get("SLURM_PROCID", "0")),
        "WORLD_SIZE": env.get("WORLD_SIZE", env.get("SLURM_NTASKS", "1")),
        "LOCAL_RANK": env.get("LOCAL_RANK", env.get("SLURM_LOCALID", "0")),
    }
    addr = env.get("MASTER_ADDR")
    if addr is None and "SLURM_JOB_NODELIST" in env:
        addr = expand_slurm_nodelist(env["SLURM_JOB_NODELIST"])[0]
    port = env.get("MASTER_PORT")
    if port is None and "SLURM_JOB_ID" in env:
        # Same job -> same port on every node; spread over 20000-29999 to dodge neighbours.
        port = str(20000 + zlib.crc32(env["SLURM_JOB_ID"].encode()) % 10000)
    out["MASTER_ADDR"] = addr or ""
    out["MASTER_PORT"] = port or ""
    return out


def init_distributed(
    backend: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> DistInfo:
    """Create the default process group from the environment (see :func:`env_from_slurm`).

    One process (WORLD_SIZE 1 or unset): no group is created. ``backend`` defaults to nccl when CUDA
    is available, else gloo; with nccl the device is ``cuda:LOCAL_RANK``. ``timeout_s`` bounds every
    collective (and the rendezvous), so a dead rank makes the others fail instead of hanging.
    Calling it again once initialised returns the current state.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    vars_ = env_from_slurm(env)
    ws = _env_int(vars_, "WORLD_SIZE")
    rk = _env_int(vars_, "RANK")
    lr = _env_int(vars_, "LOCAL_RANK")
    if ws < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {ws}")
    if not 0 <= rk < ws:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={ws}), got {rk}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl', 'gloo' or None, got {backend!r}")
    device = torch.device("cuda", lr) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if _initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), lr, device, str(dist.get_backend()))
    if ws == 1:
        return DistInfo(0, 1, lr, device, None)
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if not vars_[key]:
            raise ValueError(
                f"{key} is not set (nor derivable from SLURM_JOB_NODELIST/SLURM_JOB_ID) "
                f"for a world of {ws} processes"
            )
    port = _env_int(vars_, "MASTER_PORT")
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{vars_['MASTER_ADDR']}:{port}",
        rank=rk,
        world_size=ws,
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=device if device.type == "cuda" else None,
    )
    return DistInfo(rk, ws, lr, device, backend)


def convert_sync_bn(model: nn.Module) -> nn.Module:
    """Global BN (official ``global_bn``): every BatchNorm becomes a
    :class:`simclr.models.sync_bn.SyncBatchNorm` that works on CPU/gloo as well as CUDA/nccl.
    Unchanged (and returned as is) with one process."""
    if not is_distributed():
        return model
    from simclr.models.sync_bn import convert_sync_batchnorm  # models depend on dist, not back

    return convert_sync_batchnorm(model)


def cleanup() -> None:
    """Destroy the process group if there is one (call at the end of a job, also on failure)."""
    if _initialized():
        dist.destroy_process_group()
