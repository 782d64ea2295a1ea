"""What a stage injects into the one training loop (docs/DESIGN.md principle 2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from simclr.train.loop import EpochLoader, Evaluator, FinalEval, StepFn


@dataclass
class StageParts:
    """What a stage injects into the loop (each stage module's ``build(cfg, device)`` returns one)."""

    model: nn.Module
    loader: EpochLoader
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    step_fn: StepFn
    evaluators: tuple[Evaluator, ...] = ()
    final_eval: FinalEval | None = None
