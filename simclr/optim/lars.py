"""LARS, as google-research/simclr `tf2/lars_optimizer.py` does it (You et al. 2017, arXiv:1708.03888).

Per parameter tensor w with gradient g (classic momentum, the official default):

    g  <- g + weight_decay * w                          (unless excluded from weight decay)
    r  <- eta * ||w|| / ||g||  if ||w|| > 0 and ||g|| > 0 else 1   (unless excluded from adaptation)
    v  <- momentum * v + lr * r * g
    w  <- w - v                  (Nesterov: w - (momentum * v + lr * r * g))

Note the trust ratio uses the norm of the decayed gradient and has no epsilon, and the learning rate
enters the momentum buffer (unlike ``torch.optim.SGD``). The official set-up
(`tf2/model.py::build_optimizer`) excludes batch-norm parameters, biases and the supervised head from
both weight decay and adaptation, and then adds the supervised head's weight decay as an L2 loss:
:func:`param_groups_for_lars` builds exactly these three groups.

Per-group options: ``lr``, ``momentum``, ``weight_decay``, ``trust_coefficient`` (eta),
``exclude_from_adaptation``, ``nesterov``. The update runs on whole groups with ``torch._foreach``
kernels and never synchronises with the device (no ``.item()``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from simclr.models.heads import SupervisedHead

__all__ = ["LARS", "param_groups_for_lars"]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling with classic momentum (official ``LARSOptimizer``).

    Args:
        params: tensors or param groups (see :func:`param_groups_for_lars`).
        lr: learning rate (set it per step from a schedule).
        momentum: 0.9 in the official code.
        weight_decay: L2 coefficient added to the gradient (official 1e-6 for SimCLRv2 pretraining
            at 4096 batch; the README recommends 1e-4 for smaller runs).
        trust_coefficient: eta, 0.001.
        exclude_from_adaptation: default for groups that do not say; True makes the group plain
            momentum SGD (with the lr inside the buffer).
        nesterov: official ``use_nesterov`` (default False).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        exclude_from_adaptation: bool = False,
        nesterov: bool = False,
    ) -> None:
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if not trust_coefficient > 0:
            raise ValueError(f"trust_coefficient must be > 0, got {trust_coefficient!r}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            exclude_from_adaptation=exclude_from_adaptation,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            if wd != 0:
                grads = list(torch._foreach_add(grads, params, alpha=wd))  # new; .grad untouched
            if group["exclude_from_adaptation"]:
                steps = torch._foreach_mul(grads, lr)
            else:
                w_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                ratio = torch.where(
                    (w_norm > 0) & (g_norm > 0),
                    group["trust_coefficient"] * w_norm / g_norm,
                    torch.ones_like(w_norm),
                )
                steps = torch._foreach_mul(grads, list((ratio * lr).unbind()))
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, steps)
            if group["nesterov"]:
                torch._foreach_add_(steps, torch._foreach_mul(bufs, momentum))
                torch._foreach_sub_(params, steps)
            else:
                torch._foreach_sub_(params, bufs)
        return loss


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (_NormBase, nn.GroupNorm, nn.LayerNorm))


def param_groups_for_lars(
    model: nn.Module, weight_decay: float, extra_heads: Iterable[nn.Module] = ()
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into the official LARS groups.

    * ``"default"``: conv / linear weights — weight decay and layer adaptation;
    * ``"bn_bias"``: normalisation parameters and every bias — neither (official
      ``exclude_from_weight_decay=['batch_normalization', 'bias', ...]``, which also applies to
      adaptation);
    * ``"head"``: weights of :class:`~simclr.models.heads.SupervisedHead` modules (the online probe,
      the classifier) plus any ``extra_heads`` — weight decay but no adaptation (official: excluded
      from LARS by the name ``head_supervised``, their L2 added to the loss instead).

    Empty groups are dropped; each group carries a ``"name"`` key.
    """
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    head_modules = {id(m) for m in model.modules() if isinstance(m, SupervisedHead)}
    head_modules |= {id(m) for h in extra_heads for m in h.modules()}
    default: list[Tensor] = []
    bn_bias: list[Tensor] = []
    head: list[Tensor] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if _is_norm(module) or name == "bias":
                bn_bias.append(p)
            elif id(module) in head_modules:
                head.append(p)
            else:
                default.append(p)
    groups = [
        {"name": "default", "params": default, "weight_decay": weight_decay,
         "exclude_from_adaptation": False},
        {"name": "bn_bias", "params": bn_bias, "weight_decay": 0.0,
         "exclude_from_adaptation": True},
        {"name": "head", "params": head, "weight_decay": weight_decay,
         "exclude_from_adaptation": True},
    ]  # fmt: skip
    return [g for g in groups if g["params"]]
