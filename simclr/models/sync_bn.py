"""Global (cross-rank) batch normalisation that also works on CPU with gloo.

SimCLR normalises with statistics over the global batch (official flag ``global_bn=True``, SimCLR
paper Sec. 2.2 "Global BN"): with per-device BN, the two views of an image seen on one device can
"cheat" through local statistics. ``torch.nn.SyncBatchNorm`` raises on CPU tensors, which would make
multi-node CPU runs (and their tests) impossible, so CUDA inputs use torch's fused kernel and other
devices use an all-reduce of per-channel sums with autograd.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; backward sums the gradients over ranks too (each rank's loss depends on the
    global statistics)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


class SyncBatchNorm(_BatchNorm):
    """``nn.SyncBatchNorm`` with a CPU (any-device) path. Input [B, C, ...]; stats over all ranks.

    Supports a missing ``bias`` (scale-only BN, as the projection head's last layer). Not a subclass of
    ``nn.SyncBatchNorm``: DistributedDataParallel refuses those on CPU modules; CUDA inputs still run
    torch's fused kernel through ``nn.SyncBatchNorm.forward``.
    """

    process_group: Any = None

    def _check_input_dim(self, input: Tensor) -> None:  # noqa: A002
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torch's name
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if input.is_cuda and distributed and self.training:
            return self._cuda_forward(input)
        if not (self.training and distributed):
            return super().forward(input)
        self._check_input_dim(input)
        if self.momentum is None or not self.track_running_stats:
            raise ValueError("SyncBatchNorm CPU path needs track_running_stats and a momentum")
        c = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        x = input.float()
        local_n = x.numel() // c
        # One collective for sums, sums of squares and counts; differentiable (backward = all-reduce).
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), x.new_full((1,), float(local_n))])
        stats = _AllReduceSum.apply(stats)
        n = stats[2 * c]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            assert self.running_mean is not None and self.running_var is not None
            self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
            unbiased = var * (n / (n - 1).clamp_min(1.0))
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        shape = [1, c] + [1] * (input.dim() - 2)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        out: Tensor = x * scale.view(shape) + shift.view(shape)
        return out.to(input.dtype)


    def _cuda_forward(self, input: Tensor) -> Tensor:  # noqa: A002
        """torch's fused CUDA kernels, called as ``nn.SyncBatchNorm.forward`` calls them (whose other
        methods a non-subclass lacks)."""
        from torch.nn.modules._functions import SyncBatchNorm as _SyncBatchNormFn

        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as torch
                momentum = 1.0 / float(self.num_batches_tracked)
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        out: Tensor = _SyncBatchNormFn.apply(
            input, self.weight, self.bias, self.running_mean, self.running_var, self.eps, momentum,
            group, dist.get_world_size(group),
        )  # fmt: skip
        return out


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``_BatchNorm`` in ``module`` (recursively) by :class:`SyncBatchNorm`, sharing the
    parameters and buffers. Returns the (possibly new) root module."""
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias  # may be None (scale-only BN)
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child))
    return out
